//! The real-GPU launcher: cudarc 0.19 over the CUDA driver, one stream, kernels compiled by NVRTC to
//! CUBIN for the device's own compute capability at load time (SASS loads on any driver that knows
//! the architecture, unlike PTX newer than the driver), cached per process.

use super::{kernels, nvrtc, Dim, Launcher};
use crate::error::{Error, Result};
use cudarc::driver::{result as cu, sys, CudaContext, CudaFunction, CudaStream};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether libcuda loads. cudarc panics on first use without it, so this is checked before anything else.
pub fn driver_present() -> bool {
    // Safety: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

/// One line per device, or why there is none.
pub fn devices() -> std::result::Result<Vec<DeviceInfo>, String> {
    if !driver_present() {
        return Err("libcuda (the NVIDIA driver) was not found".into());
    }
    cu::init().map_err(|e| format!("cuInit failed: {e}"))?;
    let n = cu::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {e}"))?;
    if n == 0 {
        return Err("the NVIDIA driver reports no device".into());
    }
    (0..n)
        .map(|i| {
            let dev = cu::device::get(i).map_err(|e| format!("device {i}: {e}"))?;
            let name = cu::device::get_name(dev).map_err(|e| format!("device {i}: {e}"))?;
            use sys::CUdevice_attribute as A;
            // Safety: `dev` is a valid device handle.
            let attr = |a: A| unsafe { cu::device::get_attribute(dev, a) }.map_err(|e| format!("device {i}: {e}"));
            // Safety: as above.
            let mem = unsafe { cu::device::total_mem(dev) };
            Ok(DeviceInfo {
                ordinal: i as usize,
                name,
                compute_capability: (
                    attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                    attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
                ),
                memory_bytes: mem.map_err(|e| e.to_string())?,
                // Properties for the derived peaks; 0 where the driver no longer reports one.
                sms: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).unwrap_or(0),
                clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).unwrap_or(0),
                mem_clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).unwrap_or(0),
                bus_bits: attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH).unwrap_or(0),
            })
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
    pub sms: i32,
    /// Peak SM clock (kHz).
    pub clock_khz: i32,
    /// Peak memory clock (kHz).
    pub mem_clock_khz: i32,
    pub bus_bits: i32,
}

impl DeviceInfo {
    /// FP32 and bandwidth peaks derived from the properties above.
    pub fn peaks(&self) -> Option<crate::machine::Peaks> {
        crate::machine::cuda_peaks(self.sms, self.clock_khz, self.mem_clock_khz, self.bus_bits, self.compute_capability)
    }
}

/// One CUBIN image per kernel file, in `kernels::FILES` order.
type Images = Arc<Vec<Vec<u8>>>;

/// CUBIN per (architecture, kernel file), compiled once per process.
fn cubins(arch: &str) -> Result<Images> {
    static CACHE: OnceLock<Mutex<HashMap<String, Images>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cache.get(arch) {
        return Ok(c.clone());
    }
    let compiled = kernels::FILES
        .iter()
        .map(|f| nvrtc::compile(&f.full_source(), f.name, arch, nvrtc::Output::Cubin))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::Backend)?;
    let compiled = Arc::new(compiled);
    cache.insert(arch.to_string(), compiled.clone());
    Ok(compiled)
}

/// A device allocation, freed on drop.
pub struct DriverMem {
    ptr: sys::CUdeviceptr,
    ctx: Arc<CudaContext>,
}
// Safety: a device address; the context is bound before each use.
unsafe impl Send for DriverMem {}
unsafe impl Sync for DriverMem {}

impl Drop for DriverMem {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // Safety: allocated by malloc_sync below and freed once. The legacy default stream orders
            // the free after queued kernels that use it.
            let _ = unsafe { cu::free_sync(self.ptr) };
        }
    }
}

pub struct DriverLauncher {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    info: DeviceInfo,
}

// Safety: CUDA driver handles may be used from any thread once the context is bound (done per call).
unsafe impl Send for DriverLauncher {}
unsafe impl Sync for DriverLauncher {}

impl DriverLauncher {
    pub fn new(ordinal: usize) -> Result<Self> {
        let infos = devices().map_err(|why| Error::Backend(format!("no CUDA device: {why}")))?;
        let info = infos
            .get(ordinal)
            .cloned()
            .ok_or_else(|| Error::Backend(format!("no CUDA device {ordinal} ({} present)", infos.len())))?;
        if !nvrtc::available() {
            return Err(Error::Backend(
                "the cuda backend compiles its kernels at load time and needs libnvrtc: \
                 pip install nvidia-cuda-nvrtc-cu12 and add its lib directory to LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let err = |what: &str, e: cudarc::driver::DriverError| Error::Backend(format!("{what}: {e}"));
        let ctx = CudaContext::new(ordinal).map_err(|e| err("creating the CUDA context", e))?;
        // The legacy default stream: one stream for everything, ordered with the synchronous copies.
        let stream = ctx.default_stream();
        let (major, minor) = info.compute_capability;
        let arch = format!("sm_{major}{minor}");
        let images = cubins(&arch)?;
        let mut functions = HashMap::new();
        for (file, image) in kernels::FILES.iter().zip(images.iter()) {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(image.clone()))
                .map_err(|e| err(&format!("loading {} ({arch})", file.name), e))?;
            for &k in file.kernels {
                let f = module.load_function(k).map_err(|e| err(&format!("kernel {k}"), e))?;
                functions.insert(k, f);
            }
        }
        Ok(DriverLauncher { ctx, stream, functions, info })
    }

    fn bind(&self) {
        if let Err(e) = self.ctx.bind_to_thread() {
            panic!("CUDA context lost: {e}");
        }
    }
}

impl Launcher for DriverLauncher {
    type Mem = DriverMem;
    const NAME: &'static str = "cuda";
    const TIMING: crate::backend::profile::Timing = crate::backend::profile::Timing::CudaEvents;

    fn timed(&self, f: &mut dyn FnMut()) -> Option<std::time::Duration> {
        self.bind();
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let Ok(start) = self.stream.record_event(flags) else {
            f();
            return None;
        };
        f();
        let end = self.stream.record_event(flags).ok()?;
        // elapsed_ms waits for both events.
        let ms = start.elapsed_ms(&end).ok()?;
        Some(std::time::Duration::from_secs_f64(ms as f64 / 1e3))
    }

    fn peaks(&self) -> Option<crate::machine::Peaks> {
        self.info.peaks()
    }

    fn describe(&self) -> String {
        let (major, minor) = self.info.compute_capability;
        format!("{} (sm_{major}{minor}, {:.1} GiB)", self.info.name, self.info.memory_bytes as f64 / (1u64 << 30) as f64)
    }

    fn alloc(&self, words: usize) -> Result<DriverMem> {
        self.bind();
        let bytes = words.max(1) * 4;
        // Safety: plain allocation and zero fill of the new range.
        let ptr = unsafe { cu::malloc_sync(bytes) }
            .map_err(|e| Error::Backend(format!("cannot allocate {:.1} MiB on the GPU: {e}", bytes as f64 / (1 << 20) as f64)))?;
        let mem = DriverMem { ptr, ctx: self.ctx.clone() };
        // Safety: `ptr` holds `bytes` bytes.
        unsafe { cu::memset_d8_async(ptr, 0, bytes, self.stream.cu_stream()) }
            .map_err(|e| Error::Backend(format!("zeroing a GPU buffer: {e}")))?;
        Ok(mem)
    }

    fn address(&self, mem: &DriverMem, word_offset: usize) -> u64 {
        mem.ptr + 4 * word_offset as u64
    }

    fn upload(&self, dst: &DriverMem, word_offset: usize, src: &[u32]) {
        self.bind();
        // Safety: stream-ordered copy into our allocation; synchronized before `src` may go away.
        let r = unsafe { cu::memcpy_htod_async(self.address(dst, word_offset), src, self.stream.cu_stream()) }
            .and_then(|_| self.stream.synchronize());
        if let Err(e) = r {
            panic!("CUDA upload failed: {e}");
        }
    }

    fn download(&self, src: &DriverMem, word_offset: usize, dst: &mut [u32]) {
        self.bind();
        // Safety: stream-ordered after every queued kernel; synchronized before `dst` is read.
        let r = unsafe { cu::memcpy_dtoh_async(dst, self.address(src, word_offset), self.stream.cu_stream()) }
            .and_then(|_| self.stream.synchronize());
        if let Err(e) = r {
            panic!("CUDA download failed (a kernel may have faulted): {e}");
        }
    }

    fn launch(&self, kernel: &'static str, grid: Dim, block: Dim, shared_bytes: u32, params: &mut [*mut c_void]) {
        self.bind();
        let f = &self.functions[kernel];
        // Safety: the parameters match the kernel's signature (the emulator runs the same host code
        // against the same signatures in CI) and point at values that live until this call returns;
        // cuLaunchKernel copies them.
        let r = unsafe {
            cu::launch_kernel(
                f.cu_function(),
                (grid[0], grid[1], grid[2]),
                (block[0], block[1], block[2]),
                shared_bytes,
                self.stream.cu_stream(),
                params,
            )
        };
        if let Err(e) = r {
            panic!("CUDA launch of {kernel} failed: {e}");
        }
    }

    fn synchronize(&self) {
        self.bind();
        if let Err(e) = self.stream.synchronize() {
            panic!("CUDA stream failed: {e}");
        }
    }
}

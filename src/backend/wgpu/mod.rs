//! The wgpu backend: every op is one or more hand-written WGSL compute shaders (`shaders/`).
//!
//! Work is recorded into one command encoder and submitted only when the host needs it: a download, a
//! `synchronize`, or an upload (which must not overtake queued work, since `queue.write_buffer` lands
//! before the next submission). A training step is therefore one submission. Each dispatch's parameters
//! go into a 256-byte slot of one uniform buffer, written in a single `write_buffer` at submit time.
//!
//! Views are bound as windows of their buffer starting at an offset aligned to the adapter's
//! `min_storage_buffer_offset_alignment`; the remaining word offset travels in the parameter block
//! (fields `o1..o8`). So a buffer may be larger than the 128 MiB storage-binding limit of lavapipe as
//! long as each view fits in one binding.

mod ops;

use super::{Backend, Counters, Op, View};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device buffer of `len` 4-byte words.
pub struct WgpuBuffer {
    raw: wgpu::Buffer,
    len: usize,
}

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
/// Shader files by name (each is prepended with `common.wgsl`, as build.rs validates them).
const SHADERS: &[(&str, &str)] = &[
    ("activation", include_str!("../../../shaders/activation.wgsl")),
    ("adamw", include_str!("../../../shaders/adamw.wgsl")),
    ("attribution", include_str!("../../../shaders/attribution.wgsl")),
    ("attention", include_str!("../../../shaders/attention.wgsl")),
    ("attnstats", include_str!("../../../shaders/attnstats.wgsl")),
    ("crossentropy", include_str!("../../../shaders/crossentropy.wgsl")),
    ("elementwise", include_str!("../../../shaders/elementwise.wgsl")),
    ("encoder", include_str!("../../../shaders/encoder.wgsl")),
    ("layernorm", include_str!("../../../shaders/layernorm.wgsl")),
    ("mask", include_str!("../../../shaders/mask.wgsl")),
    ("matmul", include_str!("../../../shaders/matmul.wgsl")),
    ("regularize", include_str!("../../../shaders/regularize.wgsl")),
    ("smi", include_str!("../../../shaders/smi.wgsl")),
];

/// Bytes of one dispatch's parameter block (≥ every adapter's uniform offset alignment).
const PARAM_SLOT: u64 = 256;
/// Parameter slots per submission; a longer stretch of work is submitted in pieces.
const PARAM_SLOTS: u64 = 2048;
/// Offsets o1..o8 lead every parameter block.
const OFFSET_FIELDS: usize = 8;
const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// What `memsieve info` shows about one adapter.
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

impl AdapterReport {
    pub fn is_real_gpu(&self) -> bool {
        !matches!(self.device_type, wgpu::DeviceType::Cpu | wgpu::DeviceType::Other)
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    wgpu::Instance::new(desc.with_env())
}

/// Every Vulkan adapter on this machine (empty when there is no loader or driver).
pub fn adapters() -> Vec<AdapterReport> {
    let inst = instance();
    let found = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::VULKAN));
    found
        .into_iter()
        .map(|a| {
            let info = a.get_info();
            AdapterReport {
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: info.device_type,
                driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
                limits: a.limits(),
                features: a.features(),
            }
        })
        .collect()
}

struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    /// Parameter words of the recorded dispatches, one PARAM_SLOT each.
    params: Vec<u32>,
    /// While an op is timed (`run_timed`): the compute passes given timestamp writes so far, or
    /// None once more passes than the query set holds were recorded.
    timed_passes: Option<Option<u32>>,
}

/// Compute passes one timed op may have (two timestamps each); longer ops fall back to wall time.
const TIMED_PASSES: u32 = 512;

/// Timestamp queries for the profiler (adapters with TIMESTAMP_QUERY).
struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pub adapter: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
    pending: Mutex<Pending>,
    op_lock: Mutex<()>,
    timestamps: Option<Timestamps>,
    param_buf: wgpu::Buffer,
    /// Working space for two-pass reductions, grown on demand.
    scratch: Mutex<Option<Arc<WgpuBuffer>>>,
    /// Staging buffer for downloads, grown on demand.
    staging: Mutex<Option<wgpu::Buffer>>,
    dispatches: AtomicU64,
    submits: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl WgpuBackend {
    /// Open the first adapter, preferring a real GPU; `WGPU_ADAPTER_NAME` (substring) picks one by name.
    pub fn new() -> Result<Self> {
        let inst = instance();
        let mut found = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::VULKAN));
        if found.is_empty() {
            return Err(Error::Backend(
                "wgpu found no Vulkan adapter: install a Vulkan driver (on Debian, `apt-get install \
                 mesa-vulkan-drivers libvulkan1` gives the lavapipe CPU driver) or use --backend cpu"
                    .into(),
            ));
        }
        if let Ok(want) = std::env::var("WGPU_ADAPTER_NAME") {
            let want = want.to_lowercase();
            found.retain(|a| a.get_info().name.to_lowercase().contains(&want));
            if found.is_empty() {
                return Err(Error::Backend(format!("no wgpu adapter's name contains WGPU_ADAPTER_NAME={want:?}")));
            }
        }
        found.sort_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            _ => 3,
        });
        let adapter = found.swap_remove(0);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("memsieve"),
            // The adapter's real limits: wgpu's defaults are far lower (8 storage buffers, 16 KiB shared).
            required_limits: limits.clone(),
            // Timestamp queries time each op on the device for --profile, where the adapter has them.
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            ..Default::default()
        }))
        .map_err(|e| Error::Backend(format!("wgpu could not open {}: {e}", adapter.get_info().name)))?;
        let param_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("op parameters"),
            size: PARAM_SLOT * PARAM_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY).then(|| {
            let bytes = 2 * TIMED_PASSES as u64 * wgpu::QUERY_SIZE as u64;
            Timestamps {
                set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("op timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * TIMED_PASSES,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                period_ns: queue.get_timestamp_period() as f64,
            }
        });
        Ok(WgpuBackend {
            timestamps,
            device,
            queue,
            adapter: adapter.get_info(),
            limits,
            pipelines: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending { encoder: None, params: Vec::new(), timed_passes: None }),
            op_lock: Mutex::new(()),
            param_buf,
            scratch: Mutex::new(None),
            staging: Mutex::new(None),
            dispatches: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        })
    }

    fn pipeline(&self, file: &'static str, entry: &'static str) -> wgpu::ComputePipeline {
        let mut cache = self.pipelines.lock().unwrap();
        if let Some(p) = cache.get(&(file, entry)) {
            return p.clone();
        }
        let body = SHADERS.iter().find(|(n, _)| *n == file).unwrap_or_else(|| panic!("no shader file {file}")).1;
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(file),
            source: wgpu::ShaderSource::Wgsl(format!("{COMMON}\n{body}").into()),
        });
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        cache.insert((file, entry), p.clone());
        p
    }

    /// Working space of at least `len` words (valid until the next call; its users run in order).
    fn scratch(&self, len: usize) -> Arc<WgpuBuffer> {
        let mut s = self.scratch.lock().unwrap();
        match &*s {
            Some(b) if b.len >= len => b.clone(),
            _ => {
                let b = Arc::new(self.alloc(len.next_power_of_two()).expect("scratch allocation"));
                *s = Some(b.clone());
                b
            }
        }
    }

    /// A storage binding for a view: the window of its buffer from the aligned start below the view,
    /// and the view's remaining offset in words.
    fn window<'a>(&self, v: &View<'a, WgpuBuffer>) -> (wgpu::BufferBinding<'a>, u32) {
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let off = 4 * v.off as u64;
        let start = off / align * align;
        let end = (4 * (v.off + v.len.max(1)) as u64).min(v.buf.raw.size());
        let size = end - start;
        assert!(
            size <= self.limits.max_storage_buffer_binding_size,
            "a {size}-byte view exceeds this adapter's {}-byte storage binding limit",
            self.limits.max_storage_buffer_binding_size
        );
        (wgpu::BufferBinding { buffer: &v.buf.raw, offset: start, size: NonZeroU64::new(size) }, ((off - start) / 4) as u32)
    }

    /// Record one dispatch of `file::entry` with `groups` workgroups, the given views at their binding
    /// numbers (1..=8), and the shader's scalar parameters (which follow o1..o8).
    fn dispatch(&self, file: &'static str, entry: &'static str, groups: [u32; 3], bindings: &[(u32, View<'_, WgpuBuffer>)], scalars: &[u32]) {
        if groups.contains(&0) {
            return;
        }
        let pipeline = self.pipeline(file, entry);
        let mut words = vec![0u32; OFFSET_FIELDS];
        let mut entries = Vec::with_capacity(bindings.len() + 1);
        for (binding, view) in bindings {
            let (window, rest) = self.window(view);
            words[*binding as usize - 1] = rest;
            entries.push(wgpu::BindGroupEntry { binding: *binding, resource: wgpu::BindingResource::Buffer(window) });
        }
        words.extend_from_slice(scalars);
        assert!(words.len() * 4 <= PARAM_SLOT as usize, "{file}::{entry}: parameter block too large");

        let mut pending = self.pending.lock().unwrap();
        if pending.params.len() as u64 >= PARAM_SLOTS * PARAM_SLOT / 4 {
            self.submit(&mut pending);
        }
        let slot = pending.params.len() as u64 * 4;
        words.resize(PARAM_SLOT as usize / 4, 0);
        pending.params.extend_from_slice(&words);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.param_buf,
                offset: slot,
                size: NonZeroU64::new(PARAM_SLOT),
            }),
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let timestamp_writes = match (&self.timestamps, pending.timed_passes) {
            (Some(ts), Some(Some(i))) if i < TIMED_PASSES => {
                pending.timed_passes = Some(Some(i + 1));
                Some(wgpu::ComputePassTimestampWrites {
                    query_set: &ts.set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                })
            }
            (_, Some(_)) => {
                pending.timed_passes = Some(None);
                None
            }
            _ => None,
        };
        let encoder = pending
            .encoder
            .get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(entry), timestamp_writes });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.dispatches.fetch_add(1, Ordering::Relaxed);
    }

    /// A 1-D launch of `threads` threads in workgroups of `wg`, folded into 2-D past 65,535 groups.
    fn groups_1d(threads: usize, wg: usize) -> [u32; 3] {
        let g = threads.div_ceil(wg) as u64;
        if g == 0 {
            return [0, 0, 0];
        }
        let x = g.min(MAX_GROUPS_PER_DIM as u64);
        let y = g.div_ceil(x);
        assert!(y <= MAX_GROUPS_PER_DIM as u64, "launch of {threads} threads exceeds the grid limit");
        [x as u32, y as u32, 1]
    }

    /// Submit what is recorded (parameters first, then the commands).
    fn submit(&self, pending: &mut Pending) {
        if let Some(encoder) = pending.encoder.take() {
            if !pending.params.is_empty() {
                self.queue.write_buffer(&self.param_buf, 0, bytemuck::cast_slice(&pending.params));
            }
            self.queue.submit([encoder.finish()]);
            self.submits.fetch_add(1, Ordering::Relaxed);
        }
        pending.params.clear();
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap();
        self.submit(&mut pending);
    }

    fn wait(&self) {
        if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            panic!("wgpu device lost while waiting for work: {e}");
        }
    }

    fn upload_bytes(&self, dst: View<'_, WgpuBuffer>, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // Queued work must run before this write lands.
        self.flush();
        self.queue.write_buffer(&dst.buf.raw, 4 * dst.off as u64, bytes);
        self.bytes_up.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }

    fn download_bytes(&self, src: View<'_, WgpuBuffer>, out: &mut [u8]) {
        let size = 4 * src.len as u64;
        if size == 0 {
            return;
        }
        // The staging buffer stays locked for the whole download (tests share one device across threads).
        let mut staging_slot = self.staging.lock().unwrap();
        if staging_slot.as_ref().is_none_or(|b| b.size() < size) {
            *staging_slot = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("download staging"),
                size: size.next_power_of_two(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = staging_slot.as_ref().unwrap();
        {
            let mut pending = self.pending.lock().unwrap();
            let encoder = pending
                .encoder
                .get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
            encoder.copy_buffer_to_buffer(&src.buf.raw, 4 * src.off as u64, staging, 0, size);
            self.submit(&mut pending);
        }
        let slice = staging.slice(0..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait();
        match rx.recv() {
            Ok(Ok(())) => {}
            other => panic!("wgpu could not map a download buffer: {other:?}"),
        }
        {
            let view = slice.get_mapped_range().expect("mapped download range");
            out.copy_from_slice(&view);
        }
        staging.unmap();
        self.bytes_down.fetch_add(size, Ordering::Relaxed);
    }
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn alloc(&self, len: usize) -> Result<WgpuBuffer> {
        // Never zero-sized (bindings must be non-empty); wgpu zero-fills new buffers.
        let size = (4 * len.max(4)) as u64;
        if size > self.limits.max_buffer_size {
            return Err(Error::Backend(format!(
                "a buffer of {len} words ({:.1} MiB) exceeds {}'s max buffer size of {:.1} MiB",
                size as f64 / 1048576.0,
                self.adapter.name,
                self.limits.max_buffer_size as f64 / 1048576.0
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend(format!("wgpu could not allocate {len} words: {e}")));
        }
        Ok(WgpuBuffer { raw, len })
    }

    fn buffer_len(&self, buf: &WgpuBuffer) -> usize {
        buf.len
    }

    fn upload_f32(&self, dst: View<'_, WgpuBuffer>, src: &[f32]) {
        self.upload_bytes(dst, bytemuck::cast_slice(src))
    }
    fn upload_u32(&self, dst: View<'_, WgpuBuffer>, src: &[u32]) {
        self.upload_bytes(dst, bytemuck::cast_slice(src))
    }
    fn download_f32(&self, src: View<'_, WgpuBuffer>, dst: &mut [f32]) {
        self.download_bytes(src, bytemuck::cast_slice_mut(dst))
    }
    fn download_u32(&self, src: View<'_, WgpuBuffer>, dst: &mut [u32]) {
        self.download_bytes(src, bytemuck::cast_slice_mut(dst))
    }

    fn run(&self, op: &Op<'_, WgpuBuffer>) {
        // One op's dispatches are recorded together: they share the scratch buffer.
        let _op = self.op_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.record(op)
    }

    fn synchronize(&self) {
        self.flush();
        self.wait();
    }

    fn timing(&self) -> crate::backend::profile::Timing {
        if self.timestamps.is_some() {
            crate::backend::profile::Timing::GpuTimestamps
        } else {
            crate::backend::profile::Timing::Wall
        }
    }

    fn run_timed(&self, op: &Op<'_, WgpuBuffer>) -> Option<std::time::Duration> {
        let Some(ts) = &self.timestamps else {
            self.run(op);
            return None;
        };
        let _op = self.op_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.pending.lock().unwrap().timed_passes = Some(Some(0));
        self.record(op);
        let passes = {
            let mut pending = self.pending.lock().unwrap();
            let passes = pending.timed_passes.take().flatten();
            if let Some(n) = passes.filter(|&n| n > 0) {
                let encoder = pending
                    .encoder
                    .get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
                encoder.resolve_query_set(&ts.set, 0..2 * n, &ts.resolve, 0);
                encoder.copy_buffer_to_buffer(&ts.resolve, 0, &ts.readback, 0, 2 * n as u64 * wgpu::QUERY_SIZE as u64);
            }
            self.submit(&mut pending);
            passes?
        };
        if passes == 0 {
            return Some(std::time::Duration::ZERO);
        }
        let slice = ts.readback.slice(0..2 * passes as u64 * wgpu::QUERY_SIZE as u64);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait();
        rx.recv().ok()?.ok()?;
        // The op's time on the device: the sum of its passes (gaps between them excluded).
        let ticks: u64 = {
            let data = slice.get_mapped_range().expect("mapped timestamp range");
            let stamps: &[u64] = bytemuck::cast_slice(&data);
            stamps.chunks_exact(2).map(|p| p[1].saturating_sub(p[0])).sum()
        };
        ts.readback.unmap();
        Some(std::time::Duration::from_nanos((ticks as f64 * ts.period_ns).round() as u64))
    }

    fn max_view_len(&self) -> usize {
        // A view's window starts up to one alignment below it.
        let l = &self.limits;
        (l.max_storage_buffer_binding_size as usize - l.min_storage_buffer_offset_alignment as usize) / 4
    }

    fn counters(&self) -> Counters {
        Counters {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }
}

//! Screening inputs: feature matrices and labels from `.npy` or `.safetensors` files, kept in the
//! precision they were stored in (f64, f32, f16, bf16) until the projection asks for its own.
//!
//! safetensors files may hold several tensors: `--features-tensor` / `--labels-tensor` name one;
//! otherwise a file's only tensor is taken, or the one named `features` / `labels`.

use super::npy;
use super::project::{Dense, Project};
use super::project_bf16::Bf16Matrix;
use crate::error::{Error, Result};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

/// Feature values in their stored precision.
#[derive(Clone, Debug)]
pub enum FeatureData {
    F64(Vec<f64>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

/// An n × d feature matrix, row-major.
#[derive(Clone, Debug)]
pub struct Features {
    pub rows: usize,
    pub cols: usize,
    pub data: FeatureData,
}

impl Features {
    pub fn f32(rows: usize, cols: usize, data: Vec<f32>) -> Features {
        Features { rows, cols, data: FeatureData::F32(data) }
    }

    pub fn dtype(&self) -> &'static str {
        match self.data {
            FeatureData::F64(_) => "f64",
            FeatureData::F32(_) => "f32",
            FeatureData::F16(_) => "f16",
            FeatureData::Bf16(_) => "bf16",
        }
    }

    /// As f32 (exact for f32/f16/bf16; f64 rounds).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            FeatureData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            FeatureData::F32(v) => v.clone(),
            FeatureData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            FeatureData::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// As f32, borrowed when stored as f32.
    pub fn f32_data(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.data {
            FeatureData::F32(v) => std::borrow::Cow::Borrowed(v),
            _ => std::borrow::Cow::Owned(self.to_f32()),
        }
    }

    /// As f64 (exact for every stored precision).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            FeatureData::F64(v) => v.clone(),
            FeatureData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            FeatureData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            FeatureData::Bf16(v) => v.iter().map(|x| x.to_f64()).collect(),
        }
    }

    /// As bf16 pairs for the bf16 projection (bf16 input is taken as is; others round to nearest even).
    pub fn to_bf16(&self) -> Result<Bf16Matrix> {
        match &self.data {
            FeatureData::Bf16(v) => Bf16Matrix::from_bf16(v, self.rows, self.cols),
            FeatureData::F32(v) => Bf16Matrix::from_f32(v, self.rows, self.cols),
            _ => Bf16Matrix::from_f32(&self.to_f32(), self.rows, self.cols),
        }
    }

    /// Run `f` on these features as a projection input of the requested precision.
    pub fn with_projection<R>(&self, precision: Precision, f: impl FnOnce(&dyn ProjectAny) -> R) -> Result<R> {
        let (n, d) = (self.rows, self.cols);
        Ok(match precision {
            Precision::F32 => {
                let x = self.to_f32();
                f(&Dense { x: &x, n, d })
            }
            Precision::F64 => {
                let x = self.to_f64();
                f(&Dense { x: &x, n, d })
            }
            Precision::Bf16 => f(&self.to_bf16()?),
        })
    }
}

/// Projection precision of a screening run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 projection GEMM (as the LLM reference code; statistics and scores stay f64).
    F32,
    /// f64 projection (as the `psmi` package).
    F64,
    /// bf16 inputs and directions, f32 sums (AVX-512 BF16 `vdpbf16ps` where the CPU has it).
    Bf16,
}

/// Object-safe view of a projection input of any precision, for callers that pick one at run time.
pub trait ProjectAny: Sync {
    fn psmi(&self, classes: &super::Classes, dirs: &super::Directions, slices: usize, opts: &super::PsmiOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<super::PsmiScores>;
    fn psmi_auto(&self, classes: &super::Classes, dirs: &super::Directions, opts: &super::PsmiOptions, auto: &super::AutoOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<super::PsmiScores>;
}

impl<X: Project> ProjectAny for X {
    fn psmi(&self, classes: &super::Classes, dirs: &super::Directions, slices: usize, opts: &super::PsmiOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<super::PsmiScores> {
        super::psmi_of(self, classes, dirs, slices, opts, progress)
    }
    fn psmi_auto(&self, classes: &super::Classes, dirs: &super::Directions, opts: &super::PsmiOptions, auto: &super::AutoOptions, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<super::PsmiScores> {
        super::psmi_auto_of(self, classes, dirs, opts, auto, progress)
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Pick the tensor: the named one, the only one, or the one with the default name.
fn pick<'a>(st: &'a SafeTensors<'a>, path: &Path, wanted: Option<&str>, default_name: &str) -> Result<(String, TensorView<'a>)> {
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let name = match wanted {
        Some(w) => w.to_string(),
        None if names.len() == 1 => names[0].clone(),
        None if names.iter().any(|n| n == default_name) => default_name.to_string(),
        None => {
            return Err(Error::Input(format!(
                "{}: holds {} tensors ({}); name one with --{default_name}-tensor",
                path.display(),
                names.len(),
                names.join(", ")
            )))
        }
    };
    let view = st.tensor(&name).map_err(|_| Error::Input(format!("{}: no tensor named {name:?} (it has: {})", path.display(), names.join(", "))))?;
    Ok((name, view))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::Input(format!("{}: not a valid safetensors file (truncated or corrupt?): {e}", path.display())))
}

/// Little-endian words of `width` bytes, decoded one by one (safetensors data need not be aligned).
fn decode<T, const W: usize>(data: &[u8], f: impl Fn([u8; W]) -> T) -> Vec<T> {
    data.chunks_exact(W).map(|c| f(c.try_into().expect("chunk of W bytes"))).collect()
}

/// A 2-D feature matrix from `.npy` (f16/f32/f64) or `.safetensors` (F16/BF16/F32/F64).
pub fn read_features(path: impl AsRef<Path>, tensor: Option<&str>) -> Result<Features> {
    let path = path.as_ref();
    if !is_safetensors(path) {
        if tensor.is_some() {
            return Err(Error::Input(format!("{}: --features-tensor applies to .safetensors files only", path.display())));
        }
        return npy::read_features_native(path);
    }
    let bytes = read_bytes(path)?;
    let st = parse(path, &bytes)?;
    let (name, view) = pick(&st, path, tensor, "features")?;
    let shape = view.shape().to_vec();
    if shape.len() != 2 {
        return Err(Error::Input(format!("{}: tensor {name} must be 2-D (n × d), not shape {shape:?}", path.display())));
    }
    let data = view.data();
    let data = match view.dtype() {
        Dtype::F64 => FeatureData::F64(decode(data, f64::from_le_bytes)),
        Dtype::F32 => FeatureData::F32(decode(data, f32::from_le_bytes)),
        Dtype::F16 => FeatureData::F16(decode(data, f16::from_le_bytes)),
        Dtype::BF16 => FeatureData::Bf16(decode(data, bf16::from_le_bytes)),
        other => return Err(Error::Input(format!("{}: tensor {name} has dtype {other}; features must be F16, BF16, F32 or F64", path.display()))),
    };
    Ok(Features { rows: shape[0], cols: shape[1], data })
}

/// Integer labels of shape (n,) or (n, 1), from `.npy` or `.safetensors` (integer dtypes; floats
/// when every value is integral).
pub fn read_labels(path: impl AsRef<Path>, tensor: Option<&str>) -> Result<Vec<i64>> {
    let path = path.as_ref();
    if !is_safetensors(path) {
        if tensor.is_some() {
            return Err(Error::Input(format!("{}: --labels-tensor applies to .safetensors files only", path.display())));
        }
        return npy::read_labels(path);
    }
    let bytes = read_bytes(path)?;
    let st = parse(path, &bytes)?;
    let (name, view) = pick(&st, path, tensor, "labels")?;
    let shape = view.shape().to_vec();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(Error::Input(format!("{}: labels tensor {name} must have shape (n,), not {shape:?}", path.display())));
    }
    let data = view.data();
    let ints: Vec<i64> = match view.dtype() {
        Dtype::I64 => decode(data, i64::from_le_bytes),
        Dtype::I32 => decode(data, |b| i32::from_le_bytes(b) as i64),
        Dtype::I16 => decode(data, |b| i16::from_le_bytes(b) as i64),
        Dtype::I8 => decode(data, |b: [u8; 1]| b[0] as i8 as i64),
        Dtype::U8 => decode(data, |b: [u8; 1]| b[0] as i64),
        Dtype::U16 => decode(data, |b| u16::from_le_bytes(b) as i64),
        Dtype::U32 => decode(data, |b| u32::from_le_bytes(b) as i64),
        Dtype::U64 => {
            let v: Vec<u64> = decode(data, u64::from_le_bytes);
            v.into_iter().map(|x| i64::try_from(x).map_err(|_| Error::Input(format!("{}: label {x} exceeds i64", path.display())))).collect::<Result<_>>()?
        }
        Dtype::F32 | Dtype::F64 => {
            let v: Vec<f64> = if view.dtype() == Dtype::F32 { decode(data, |b| f32::from_le_bytes(b) as f64) } else { decode(data, f64::from_le_bytes) };
            v.iter()
                .enumerate()
                .map(|(i, &x)| if x.fract() == 0.0 && x.abs() < 9.0e15 { Ok(x as i64) } else { Err(Error::Input(format!("{}: label {i} is {x}, not an integer", path.display()))) })
                .collect::<Result<_>>()?
        }
        other => return Err(Error::Input(format!("{}: labels tensor {name} has dtype {other}; integer labels expected", path.display()))),
    };
    Ok(ints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: HashMap<String, TensorView<'_>> = tensors.iter().map(|(n, dt, sh, b)| (n.to_string(), TensorView::new(*dt, sh.clone(), b).unwrap())).collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    #[test]
    fn safetensors_features_and_labels_in_every_precision() {
        let dir = std::env::temp_dir().join(format!("memsieve-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vals = [1.5f32, -2.25, 0.0, 3.0, 1e-3, 7.0];
        let f = dir.join("x.safetensors");
        let bytes_of = |dt: Dtype| -> Vec<u8> {
            match dt {
                Dtype::F64 => vals.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
                Dtype::F32 => vals.iter().flat_map(|&v| v.to_le_bytes()).collect(),
                Dtype::F16 => vals.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
                _ => vals.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
            }
        };
        for (dt, name) in [(Dtype::F64, "f64"), (Dtype::F32, "f32"), (Dtype::F16, "f16"), (Dtype::BF16, "bf16")] {
            let labels: Vec<u8> = [4i64, 4, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
            write_st(&f, &[("features", dt, vec![3, 2], bytes_of(dt)), ("labels", Dtype::I64, vec![3], labels)]);
            let x = read_features(&f, None).unwrap();
            assert_eq!((x.rows, x.cols, x.dtype()), (3, 2, name));
            let back = x.to_f32();
            for (a, b) in back.iter().zip(vals) {
                assert!((a - b).abs() <= 2e-3 * b.abs(), "{name}: {a} vs {b}");
            }
            assert_eq!(read_labels(&f, None).unwrap(), vec![4, 4, 9]);
            assert_eq!(read_labels(&f, Some("labels")).unwrap(), vec![4, 4, 9]);
        }
        // bf16 input goes to the bf16 projection unrounded.
        let bx = read_features(&f, None).unwrap().to_bf16().unwrap();
        assert_eq!(bx.get(1, 1), bf16::from_f32(3.0).to_f32());
        // Errors: ambiguous file, unknown name, wrong rank, wrong dtype, corrupt file.
        write_st(&f, &[("a", Dtype::F32, vec![3, 2], bytes_of(Dtype::F32)), ("b", Dtype::F32, vec![6], bytes_of(Dtype::F32))]);
        assert!(read_features(&f, None).unwrap_err().to_string().contains("--features-tensor"));
        assert!(read_features(&f, Some("zz")).unwrap_err().to_string().contains("no tensor named"));
        assert!(read_features(&f, Some("b")).unwrap_err().to_string().contains("2-D"));
        assert!(read_labels(&f, Some("a")).unwrap_err().to_string().contains("shape (n,)"));
        write_st(&f, &[("labels", Dtype::F32, vec![2], [1.5f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect())]);
        assert!(read_labels(&f, None).unwrap_err().to_string().contains("not an integer"));
        std::fs::write(&f, b"\x08\0\0\0\0\0\0\0{bad").unwrap();
        assert!(read_features(&f, None).unwrap_err().to_string().contains("not a valid safetensors"));
        assert!(read_features(dir.join("x.npy"), Some("t")).unwrap_err().to_string().contains("applies to .safetensors"));
        std::fs::remove_dir_all(&dir).ok();
    }
}

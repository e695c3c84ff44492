//! `.npy` input and output for screening (via `npyz`): feature matrices in f32/f64/f16, integer
//! labels, and f64/i64 outputs. C order is read as is; Fortran order is transposed.

use crate::error::{Error, Result};
use std::path::Path;

/// A row-major matrix read from disk.
#[derive(Clone, Debug)]
pub struct Matrix<T> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<T>,
}

fn open(path: &Path) -> Result<npyz::NpyFile<std::io::BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    npyz::NpyFile::new(std::io::BufReader::new(f)).map_err(|e| Error::Input(format!("{}: not a readable .npy file: {e}", path.display())))
}

/// Type code without byte order: "f4", "i8", "u1", ...
fn type_code(npy: &npyz::NpyFile<impl std::io::Read>, path: &Path) -> Result<String> {
    match npy.dtype() {
        npyz::DType::Plain(ty) => Ok(ty.to_string().chars().skip(1).collect()),
        other => Err(Error::Input(format!("{}: unsupported dtype {}", path.display(), other.descr()))),
    }
}

fn bad_read(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}: {e}", path.display()))
}

/// Values of any float or integer npy as f64, with its shape (C order).
pub fn read_f64(path: impl AsRef<Path>) -> Result<(Vec<f64>, Vec<usize>)> {
    let path = path.as_ref();
    let npy = open(path)?;
    let code = type_code(&npy, path)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let fortran = npy.order() == npyz::Order::Fortran;
    let values: Vec<f64> = match code.as_str() {
        "f8" => npy.into_vec::<f64>().map_err(|e| bad_read(path, e))?,
        "f4" => npy.into_vec::<f32>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        "f2" => npy.into_vec::<half::f16>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        "i8" => npy.into_vec::<i64>().map_err(|e| bad_read(path, e))?.into_iter().map(|v| v as f64).collect(),
        "i4" => npy.into_vec::<i32>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        "i2" => npy.into_vec::<i16>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        "i1" => npy.into_vec::<i8>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        "u8" => npy.into_vec::<u64>().map_err(|e| bad_read(path, e))?.into_iter().map(|v| v as f64).collect(),
        "u4" => npy.into_vec::<u32>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        "u2" => npy.into_vec::<u16>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        "u1" => npy.into_vec::<u8>().map_err(|e| bad_read(path, e))?.into_iter().map(f64::from).collect(),
        other => return Err(Error::Input(format!("{}: unsupported dtype {other} (float or integer expected)", path.display()))),
    };
    Ok((if fortran && shape.len() == 2 { fortran_to_c(&values, shape[0], shape[1]) } else { values }, shape))
}

/// A rows × cols matrix stored column-major (element (i, j) at j·rows + i) → row-major.
fn fortran_to_c<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for i in 0..rows {
        for j in 0..cols {
            out.push(v[j * rows + i]);
        }
    }
    out
}

/// A 2-D float matrix (f16/f32/f64) in its stored precision.
pub fn read_features_native(path: impl AsRef<Path>) -> Result<super::input::Features> {
    use super::input::{FeatureData, Features};
    let path = path.as_ref();
    let npy = open(path)?;
    let code = type_code(&npy, path)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    if shape.len() != 2 {
        return Err(Error::Input(format!("{}: features must be a 2-D (n × d) array, not shape {shape:?}", path.display())));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let fortran = npy.order() == npyz::Order::Fortran;
    fn c_order<T: Copy>(v: Vec<T>, fortran: bool, rows: usize, cols: usize) -> Vec<T> {
        if fortran {
            fortran_to_c(&v, rows, cols)
        } else {
            v
        }
    }
    let data = match code.as_str() {
        "f8" => FeatureData::F64(c_order(npy.into_vec::<f64>().map_err(|e| bad_read(path, e))?, fortran, rows, cols)),
        "f4" => FeatureData::F32(c_order(npy.into_vec::<f32>().map_err(|e| bad_read(path, e))?, fortran, rows, cols)),
        "f2" => FeatureData::F16(c_order(npy.into_vec::<half::f16>().map_err(|e| bad_read(path, e))?, fortran, rows, cols)),
        other => return Err(Error::Input(format!("{}: features must be floating point (f2, f4, f8), not {other}", path.display()))),
    };
    Ok(Features { rows, cols, data })
}

/// A 2-D feature matrix as f32 (f64 inputs round, f16 converts exactly).
pub fn read_features(path: impl AsRef<Path>) -> Result<Matrix<f32>> {
    let f = read_features_native(path)?;
    Ok(Matrix { rows: f.rows, cols: f.cols, data: f.to_f32() })
}

/// Integer labels, shape (n,) or (n, 1). Float labels are accepted when every value is integral.
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<i64>> {
    let path = path.as_ref();
    let (values, shape) = read_f64(path)?;
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(Error::Input(format!("{}: labels must have shape (n,), not {shape:?}", path.display())));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(Error::Input(format!("{}: label {i} is {v}, not an integer", path.display())))
            }
        })
        .collect()
}

/// A 2-D matrix of directions (K × d) as f32.
pub fn read_directions(path: impl AsRef<Path>) -> Result<Matrix<f32>> {
    read_features(path)
}

fn to_bytes<T: npyz::Serialize + npyz::AutoSerialize + Copy>(data: &[T], shape: &[usize]) -> Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut buf = Vec::new();
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let io = |e: std::io::Error| Error::Input(format!("npy encoding: {e}"));
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut buf).begin_nd().map_err(io)?;
    w.extend(data.iter().copied()).map_err(io)?;
    w.finish().map_err(io)?;
    Ok(buf)
}

/// Write an f64 array atomically.
pub fn write_f64(path: impl AsRef<Path>, data: &[f64], shape: &[usize]) -> Result<()> {
    crate::error::write_atomic(path, &to_bytes(data, shape)?)
}

/// Write an i64 array atomically.
pub fn write_i64(path: impl AsRef<Path>, data: &[i64], shape: &[usize]) -> Result<()> {
    crate::error::write_atomic(path, &to_bytes(data, shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("memsieve-npy-{}", std::process::id()));
        let f = dir.join("a.npy");
        write_f64(&f, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let m = read_features(&f).unwrap();
        assert_eq!((m.rows, m.cols, m.data), (2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert!(read_labels(&f).is_err(), "2-D labels are refused");
        let l = dir.join("l.npy");
        write_i64(&l, &[3, 1, 3], &[3]).unwrap();
        assert_eq!(read_labels(&l).unwrap(), vec![3, 1, 3]);
        assert!(read_features(&l).is_err(), "integer features are refused");
        std::fs::write(dir.join("bad.npy"), b"not npy").unwrap();
        assert!(read_features(dir.join("bad.npy")).unwrap_err().to_string().contains("not a readable"));
        assert!(read_features(dir.join("missing.npy")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}

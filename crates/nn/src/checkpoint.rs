//! Models saved as safetensors: `layers.{i}.weight` (`[fan_in, fan_out]`, row-major f32,
//! as a Keras kernel) and `layers.{i}.bias` (`[fan_out]`), with the architecture as JSON
//! in the metadata under `config`. Files are written atomically.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::layer::Dense;
use crate::model::Autoencoder;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Metadata key of the architecture JSON.
pub const CONFIG_KEY: &str = "config";

/// Largest checkpoint read, in bytes: far above any model this trainer builds, and a
/// guard against reading a multi-gigabyte file that is not a model.
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

fn checkpoint_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory,
/// flushed to disk, then renamed over `path`. A crash leaves the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // Persist the rename itself.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// safetensors stores little-endian values, whatever the machine.
fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The model as safetensors bytes, with `extra` metadata entries beside `config`.
pub fn to_bytes(model: &Autoencoder, extra: &[(&str, String)]) -> Vec<u8> {
    let byte_tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .layers()
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            [
                (
                    format!("layers.{i}.weight"),
                    vec![l.spec.inputs, l.spec.units],
                    le_bytes(&l.weight),
                ),
                (
                    format!("layers.{i}.bias"),
                    vec![l.spec.units],
                    le_bytes(&l.bias),
                ),
            ]
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = byte_tensors
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches bytes"),
            )
        })
        .collect();
    let mut metadata: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    metadata.insert(CONFIG_KEY.into(), model.config().to_json());
    safetensors::serialize(views, Some(metadata)).expect("tensors serialise")
}

/// Saves the model to `path` atomically.
pub fn save(model: &Autoencoder, path: &Path, extra: &[(&str, String)]) -> Result<(), ModelError> {
    write_atomic(path, &to_bytes(model, extra))
        .map_err(|e| checkpoint_error(path, format!("cannot write: {e}")))
}

/// Reads a model from safetensors bytes; every tensor is checked against the config.
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<(Autoencoder, HashMap<String, String>), ModelError> {
    let fail = |m: String| checkpoint_error(path, m);
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
    let metadata = metadata.metadata().clone().unwrap_or_default();
    let json = metadata.get(CONFIG_KEY).ok_or_else(|| {
        fail(format!(
            "no {CONFIG_KEY:?} entry in the metadata: not a model saved by this tool"
        ))
    })?;
    let config = ModelConfig::from_json(json).map_err(|e| fail(e.to_string()))?;
    let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, ModelError> {
        let view = tensors
            .tensor(name)
            .map_err(|_| fail(format!("tensor {name} is missing")))?;
        if view.dtype() != Dtype::F32 {
            return Err(fail(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        if view.shape() != shape {
            return Err(fail(format!(
                "tensor {name} has shape {:?} but the config says {shape:?}",
                view.shape()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(fail(format!("tensor {name} holds NaN or infinite values")));
        }
        Ok(values)
    };
    let mut layers = Vec::with_capacity(config.layers.len());
    for (i, &spec) in config.layers.iter().enumerate() {
        let weight = read(&format!("layers.{i}.weight"), &[spec.inputs, spec.units])?;
        let bias = read(&format!("layers.{i}.bias"), &[spec.units])?;
        layers.push(Dense { spec, weight, bias });
    }
    let expected = 2 * config.layers.len();
    let model_tensors = tensors
        .names()
        .iter()
        .filter(|n| n.starts_with("layers."))
        .count();
    if model_tensors != expected {
        return Err(fail(format!(
            "{model_tensors} layer tensors but the config's {} layers need {expected}",
            config.layers.len()
        )));
    }
    let model = Autoencoder::from_layers(config, layers).map_err(|e| fail(e.to_string()))?;
    Ok((model, metadata))
}

/// Loads a model saved by [`save`], with its metadata.
pub fn load(path: &Path) -> Result<(Autoencoder, HashMap<String, String>), ModelError> {
    let fail = |m: String| checkpoint_error(path, m);
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > MAX_CHECKPOINT_BYTES {
        return Err(fail(format!(
            "{} bytes is larger than any model ({MAX_CHECKPOINT_BYTES} at most)",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    from_bytes(&bytes, path)
}

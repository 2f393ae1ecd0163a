//! Models saved as safetensors: every parameter tensor under its name (for dense layers
//! `layers.{i}.weight`, `[fan_in, fan_out]` row-major f32 as a Keras kernel, and
//! `layers.{i}.bias`, `[fan_out]`), with the architecture as JSON in the metadata under
//! `config`. Files are written atomically.

use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::model::Autoencoder;
use crate::optimizer::OptimizerState;
use crate::params::{Parameters, Tensor};
use crate::trainer::{Trainer, TrainerState};
use safetensors::tensor::{Dtype, View};
use safetensors::SafeTensors;
use std::borrow::Cow;
use std::collections::HashMap;
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
    write_atomic_by(path, |temp| std::fs::write(temp, bytes))
}

/// [`write_atomic`] with the temporary file written by `write_to`, given its path.
fn write_atomic_by(
    path: &Path,
    write_to: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let temp = dir.join(format!(
        ".{}{TEMP_MARK}{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        write_to(&temp)?;
        std::fs::File::open(&temp)?.sync_all()?;
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

/// Between a file's name and the writing process's id in [`write_atomic`]'s temporaries.
const TEMP_MARK: &str = ".tmp-";

/// Removes the temporaries [`write_atomic`] leaves in `dir` when a process is killed
/// mid-write, skipping those of processes that are still running. Returns how many went.
pub fn remove_stale_temporaries(dir: &Path) -> std::io::Result<usize> {
    let own = std::process::id();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, pid)) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(TEMP_MARK))
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == own || process_is_running(pid) || !entry.file_type()?.is_file() {
            continue;
        }
        std::fs::remove_file(entry.path())?;
        removed += 1;
    }
    Ok(removed)
}

/// Whether a process with this id exists; where that cannot be told, assume it does,
/// so nothing another process is writing is ever removed.
fn process_is_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// A tensor about to be written: its name, shape and values, borrowed from the model or
/// the optimizer so that saving copies nothing on a little-endian machine.
struct Named<'a> {
    name: String,
    shape: Vec<usize>,
    values: &'a [f32],
}

/// safetensors stores little-endian values, whatever the machine.
impl View for &Named<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.values))
        } else {
            Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }

    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.values)
    }
}

fn parameter_tensors(model: &Autoencoder) -> Vec<Named<'_>> {
    model
        .parameters()
        .iter()
        .map(|t| Named {
            name: t.name().to_string(),
            shape: t.shape().to_vec(),
            values: &t.values,
        })
        .collect()
}

/// `extra` with the model's architecture added under [`CONFIG_KEY`].
fn metadata(model: &Autoencoder, extra: &[(&str, String)]) -> HashMap<String, String> {
    let mut metadata: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    metadata.insert(CONFIG_KEY.into(), model.config().to_json());
    metadata
}

fn serialize(tensors: &[Named<'_>], metadata: HashMap<String, String>) -> Vec<u8> {
    let views = tensors.iter().map(|t| (t.name.as_str(), t));
    safetensors::serialize(views, Some(metadata)).expect("tensors serialise")
}

/// Writes the safetensors file to `path` atomically, tensor after tensor from where
/// they live, so that saving a model of gigabytes needs no second copy of it in memory.
fn write(
    tensors: &[Named<'_>],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<(), ModelError> {
    write_atomic_by(path, |temp| {
        let views = tensors.iter().map(|t| (t.name.as_str(), t));
        safetensors::serialize_to_file(views, Some(metadata), temp)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
    .map_err(|e| checkpoint_error(path, format!("cannot write: {e}")))
}

/// The model as safetensors bytes, with `extra` metadata entries beside `config`.
pub fn to_bytes(model: &Autoencoder, extra: &[(&str, String)]) -> Vec<u8> {
    serialize(&parameter_tensors(model), metadata(model, extra))
}

/// The names of optimizer slots start with this.
const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Metadata key of the trainer's state (history, position, settings) in a training checkpoint.
pub const TRAINER_KEY: &str = "trainer";

/// A training checkpoint: the model as [`to_bytes`] writes it, plus the optimizer's slots
/// as `optimizer.first.{name}` and `optimizer.second.{name}` (`name` the parameter's)
/// and the trainer's state as JSON under [`TRAINER_KEY`]. Loaders that only want the
/// model ignore the extra tensors. Checkpoints of earlier versions, whose slots are
/// numbered `optimizer.first.{k}` in the parameters' order, load too.
pub fn training_bytes(trainer: &Trainer, extra: &[(&str, String)]) -> Vec<u8> {
    let (tensors, metadata) = training_tensors(trainer, extra);
    serialize(&tensors, metadata)
}

/// The tensors and metadata of a training checkpoint (see [`training_bytes`]).
fn training_tensors<'a>(
    trainer: &'a Trainer,
    extra: &[(&str, String)],
) -> (Vec<Named<'a>>, HashMap<String, String>) {
    let model = trainer.model();
    let mut tensors = parameter_tensors(model);
    let slots = trainer.optimizer_state();
    for (kind, slot) in [("first", &slots.first), ("second", &slots.second)] {
        for (param, values) in model.parameters().iter().zip(slot) {
            tensors.push(Named {
                name: format!("{OPTIMIZER_PREFIX}{kind}.{}", param.name()),
                shape: param.shape().to_vec(),
                values,
            });
        }
    }
    let state = serde_json::to_string(&trainer.state()).expect("state serialises");
    let mut metadata = metadata(model, extra);
    metadata.insert(TRAINER_KEY.into(), state);
    (tensors, metadata)
}

/// Saves a training checkpoint (see [`training_bytes`]) to `path` atomically.
pub fn save_training(
    trainer: &Trainer,
    path: &Path,
    extra: &[(&str, String)],
) -> Result<(), ModelError> {
    let (tensors, metadata) = training_tensors(trainer, extra);
    write(&tensors, metadata, path)
}

/// Loads a training checkpoint written by [`save_training`] and rebuilds the trainer,
/// ready to continue.
pub fn load_training(path: &Path) -> Result<(Trainer, HashMap<String, String>), ModelError> {
    let fail = |m: String| checkpoint_error(path, m);
    let bytes = read_bounded(path)?;
    let (model, metadata) = from_bytes(&bytes, path)?;
    let json = metadata.get(TRAINER_KEY).ok_or_else(|| {
        fail(format!(
            "no {TRAINER_KEY:?} entry: a model without training state cannot be resumed"
        ))
    })?;
    let state: TrainerState =
        serde_json::from_str(json).map_err(|e| fail(format!("trainer state: {e}")))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
    let params = model.parameters();
    let expected = OptimizerState::new(&state.config.optimizer, params);
    let read_slots = |kind: &str, like: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, ModelError> {
        like.iter()
            .zip(params.iter())
            .enumerate()
            .map(|(k, (_, param))| {
                let named = format!("{OPTIMIZER_PREFIX}{kind}.{}", param.name());
                if tensors.tensor(&named).is_ok() {
                    read_f32(&tensors, &named, param.shape(), path)
                } else {
                    // Earlier versions numbered the slots and stored them flat.
                    let numbered = format!("{OPTIMIZER_PREFIX}{kind}.{k}");
                    read_f32(&tensors, &numbered, &[param.values.len()], path)
                        .map_err(|_| fail(format!("tensor {named} is missing")))
                }
            })
            .collect()
    };
    let slots = OptimizerState {
        iterations: state.optimizer_iterations,
        first: read_slots("first", &expected.first)?,
        second: read_slots("second", &expected.second)?,
    };
    let trainer = Trainer::restore(model, state, slots).map_err(|e| fail(e.to_string()))?;
    Ok((trainer, metadata))
}

/// Saves the model to `path` atomically.
pub fn save(model: &Autoencoder, path: &Path, extra: &[(&str, String)]) -> Result<(), ModelError> {
    write(&parameter_tensors(model), metadata(model, extra), path)
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
    let specs = config.parameter_specs();
    let params = specs
        .iter()
        .map(|(name, shape)| {
            read_f32(&tensors, name, shape, path).map(|v| Tensor::new(name, shape.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let model_tensors = tensors
        .names()
        .iter()
        .filter(|n| !n.starts_with(OPTIMIZER_PREFIX))
        .count();
    if model_tensors != specs.len() {
        return Err(fail(format!(
            "{model_tensors} model tensors but the config's parameters are {}",
            specs.len()
        )));
    }
    let params = Parameters::new(params).map_err(fail)?;
    let model = Autoencoder::from_parameters(config, params).map_err(|e| fail(e.to_string()))?;
    Ok((model, metadata))
}

/// One f32 tensor of exactly `shape`, with finite values.
fn read_f32(
    tensors: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<Vec<f32>, ModelError> {
    let fail = |m: String| checkpoint_error(path, m);
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
}

/// The file's bytes, refusing what is not a regular file or is larger than any model.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ModelError> {
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
    std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))
}

/// Loads a model saved by [`save`], with its metadata.
pub fn load(path: &Path) -> Result<(Autoencoder, HashMap<String, String>), ModelError> {
    from_bytes(&read_bounded(path)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        write_atomic(&path("model.safetensors"), b"new").unwrap();
        let own = format!(".model.safetensors.tmp-{}", std::process::id());
        let keep = [
            "model.safetensors",
            own.as_str(),
            // pid 1 always runs.
            ".history.json.tmp-1",
            ".notes.tmp-x",
            "notes.tmp-4000000000",
        ];
        let gone = [
            ".model.safetensors.tmp-4000000000",
            ".history.csv.tmp-4000000001",
        ];
        for name in keep.iter().skip(1).chain(&gone) {
            std::fs::write(path(name), b"torn").unwrap();
        }
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), gone.len());
        for name in keep {
            assert!(path(name).exists(), "{name} was removed");
        }
        for name in gone {
            assert!(!path(name).exists(), "{name} was kept");
        }
        assert_eq!(std::fs::read(path("model.safetensors")).unwrap(), b"new");
    }
}

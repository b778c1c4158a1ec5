//! Reading a model folder's configuration: the public MONAI bundle layout (`configs/*.json`,
//! `models/autoencoder.pt`, `models/model.pt`) and brain-ldm's own `model.json` layout.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// What a MONAI bundle folder says about its models.
#[derive(Debug, Clone)]
pub struct BundleConfig {
    /// The folder.
    pub root: PathBuf,
    /// The JSON file the definitions came from.
    pub config_file: PathBuf,
    /// The autoencoder's constructor arguments (references resolved, `_target_` removed).
    pub autoencoder: Value,
    /// The diffusion UNet's constructor arguments.
    pub diffusion: Value,
    /// The scheduler's arguments (`num_train_timesteps`, `schedule`, `beta_start`, …).
    pub scheduler: Value,
    /// The number of sampling steps the bundle uses, when it says.
    pub num_inference_steps: Option<usize>,
    /// The latent shape without the batch axis, when the bundle says.
    pub latent_shape: Option<Vec<usize>>,
    /// `models/autoencoder.pt`.
    pub autoencoder_weights: PathBuf,
    /// `models/model.pt`.
    pub diffusion_weights: PathBuf,
}

impl BundleConfig {
    /// Reads the bundle at `root`: the first of `configs/inference.json` and
    /// `configs/networks.json` that exists, with `@name` references resolved against its top
    /// level; checks that both weight files exist.
    ///
    /// # Errors
    /// [`Error::Bundle`] naming the missing file or key.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let bundle_error = |reason: String| Error::Bundle {
            path: root.clone(),
            reason,
        };
        if !root.is_dir() {
            return Err(bundle_error("not a directory".into()));
        }
        let config_file = ["inference.json", "networks.json"]
            .iter()
            .map(|name| root.join("configs").join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                bundle_error(
                    "neither configs/inference.json nor configs/networks.json exists".into(),
                )
            })?;
        let text = std::fs::read_to_string(&config_file).map_err(|e| Error::Io {
            path: config_file.clone(),
            source: e,
        })?;
        let top: Map<String, Value> = serde_json::from_str(&text).map_err(|e| Error::Bundle {
            path: config_file.clone(),
            reason: format!("not a JSON object: {e}"),
        })?;
        let definition = |prefix: &str| -> Result<Value> {
            let (_, value) = top
                .iter()
                .find(|(k, _)| k.starts_with(prefix))
                .ok_or_else(|| Error::Bundle {
                    path: config_file.clone(),
                    reason: format!("no `{prefix}` entry"),
                })?;
            resolve(value, &top, 0).map_err(|reason| Error::Bundle {
                path: config_file.clone(),
                reason: format!("{prefix}: {reason}"),
            })
        };
        let autoencoder = definition("autoencoder_def")?;
        let diffusion = definition("diffusion_def")?;
        let scheduler = definition("scheduler")?;
        let num_inference_steps = top
            .get("num_inference_steps")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        let latent_shape = match top.get("latent_shape") {
            Some(v) => {
                let v = resolve(v, &top, 0).map_err(|reason| Error::Bundle {
                    path: config_file.clone(),
                    reason: format!("latent_shape: {reason}"),
                })?;
                let dims: Option<Vec<usize>> = v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_u64().map(|d| d as usize))
                        .collect()
                });
                // The bundle-small config includes the batch axis, the public bundle does not.
                dims.map(|d| if d.len() == 5 { d[1..].to_vec() } else { d })
            }
            None => None,
        };
        let weights = |name: &str| -> Result<PathBuf> {
            let path = root.join("models").join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Bundle {
                    path: root.clone(),
                    reason: format!("missing weights file models/{name}"),
                })
            }
        };
        Ok(Self {
            autoencoder_weights: weights("autoencoder.pt")?,
            diffusion_weights: weights("model.pt")?,
            root,
            config_file,
            autoencoder,
            diffusion,
            scheduler,
            num_inference_steps,
            latent_shape,
        })
    }
}

/// Replaces `"@name"` strings by the top-level entry `name`, recursively.
fn resolve(
    value: &Value,
    top: &Map<String, Value>,
    depth: usize,
) -> std::result::Result<Value, String> {
    if depth > 16 {
        return Err("references nest more than 16 deep".into());
    }
    Ok(match value {
        Value::String(s) if s.starts_with('@') => {
            let name = &s[1..];
            let target = top
                .get(name)
                .ok_or_else(|| format!("reference {s} names no top-level entry"))?;
            resolve(target, top, depth + 1)?
        }
        Value::String(s) if s.starts_with('$') => {
            return Err(format!(
                "expression {s:?} cannot be evaluated outside Python"
            ))
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, top, depth + 1))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| Ok((k.clone(), resolve(v, top, depth + 1)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_targets_are_dropped() {
        let top: Map<String, Value> = serde_json::from_str(
            r#"{"latent_channels": 3, "shape": ["@latent_channels", 20],
                "def": {"_target_": "x.Y", "out_channels": "@latent_channels", "s": "@shape"}}"#,
        )
        .unwrap();
        let v = resolve(&top["def"], &top, 0).unwrap();
        assert_eq!(v, serde_json::json!({"out_channels": 3, "s": [3, 20]}));
        let bad: Map<String, Value> = serde_json::from_str(r#"{"a": "@b"}"#).unwrap();
        assert!(resolve(&bad["a"], &bad, 0).unwrap_err().contains("@b"));
    }
}

//! Released prompt checkpoints: the PyTorch pickles the CoOp, CoCoOp and MaPLe repositories publish
//! (`prompt_learner/model.pth.tar-N`, Dassl's `{"state_dict": …, "epoch": …, "optimizer": …,
//! "scheduler": …}`), read with [`crate::clip::torch_zip`] (burn's reader for pre-1.6 files) and mapped onto a method's parameters by name: a parameter `ctx` is the
//! state-dict entry `ctx` or the one entry ending in `.ctx` (whole-model checkpoints prefix
//! `prompt_learner.`); buffers such as `token_prefix` are ignored, and shapes must match (up to unit
//! dimensions).

use std::path::Path;

use burn_store::pytorch::PytorchReader;

use super::PromptArtifact;
use crate::error::{Error, Result};

/// The tensors of `path` that `expected` (a method's current artifact: names and shapes) needs.
pub fn read(path: &Path, expected: &PromptArtifact) -> Result<PromptArtifact> {
    let bad = |m: String| Error::Input(format!("{}: {m}", path.display()));
    if !path.is_file() {
        return Err(bad("the released checkpoint is not there".into()));
    }
    let tensors = if crate::clip::torch_zip::is_zip(path) {
        // `torch.save`'s zip format: read with our tolerant reader, which takes the state dict and
        // leaves the optimizer and scheduler Dassl saves beside it unbuilt.
        crate::clip::torch_zip::read(path)?
            .tensors
            .into_iter()
            .map(|(k, t)| (k, (t.shape, t.values)))
            .collect::<std::collections::BTreeMap<_, _>>()
    } else {
        legacy(path)?
    };
    let keys: Vec<String> = tensors.keys().cloned().collect();
    let mut out = PromptArtifact::new();
    for (name, (shape, _)) in expected {
        let suffix = format!(".{name}");
        let hits: Vec<&String> = keys.iter().filter(|k| *k == name || k.ends_with(&suffix)).collect();
        let key = match hits.as_slice() {
            [k] => *k,
            [] => {
                let mut shown: Vec<&String> = keys.iter().collect();
                shown.sort();
                return Err(bad(format!(
                    "no `{name}` for this method (the checkpoint has: {})",
                    shown.iter().take(12).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            many => {
                // An exact name wins over suffix matches.
                match many.iter().find(|k| **k == name) {
                    Some(k) => *k,
                    None => return Err(bad(format!("`{name}` is ambiguous: {many:?}"))),
                }
            }
        };
        let (data_shape, values) = &tensors[key];
        // The references keep some prompts without the leading unit dimension ours have (CoOp's
        // unified `ctx` is [M, width]; ours [1, M, width]): compare without unit dimensions.
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(data_shape) != squeeze(shape) {
            return Err(bad(format!(
                "`{key}` has shape {:?}, the method's `{name}` needs {shape:?} (another backbone or n_ctx?)",
                data_shape
            )));
        }
        // A prompt with a NaN or an infinity scores every class alike (or not at all): refused
        // here, not recorded as an accuracy.
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "`{key}` holds {} at element {i} (of {}): not a trained prompt",
                values[i],
                values.len()
            )));
        }
        out.insert(name.clone(), (shape.clone(), values.clone()));
    }
    Ok(out)
}

/// Pre-1.6 `torch.save` files (a bare pickle stream), through burn's reader.
fn legacy(path: &Path) -> Result<super::PromptArtifact> {
    let bad = |m: String| Error::Input(format!("{}: {m}", path.display()));
    let reader = PytorchReader::with_top_level_key(path, "state_dict")
        .or_else(|_| PytorchReader::new(path))
        .map_err(|e| bad(format!("not a PyTorch checkpoint: {e}")))?;
    let mut out = std::collections::BTreeMap::new();
    for key in reader.keys() {
        let data = reader
            .get(&key)
            .expect("listed key")
            .to_data()
            .map_err(|e| bad(format!("`{key}`: {e:?}")))?
            .convert::<f32>();
        let values = data.to_vec::<f32>().map_err(|e| bad(format!("`{key}`: {e:?}")))?;
        out.insert(key, (data.shape.to_vec(), values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A released CoOp checkpoint (upstream's trainer, Dassl's format) whose tensors are all NaN.
    #[test]
    fn a_released_prompt_holding_nan_is_refused() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/released/trained/coop/eurosat/seed1/prompt_learner/model.pth.tar-50");
        let sound = crate::clip::torch_zip::read(&fixture).unwrap();
        let (key, ctx) = sound.tensors.iter().find(|(k, _)| k.ends_with("ctx")).unwrap();
        let expected = PromptArtifact::from([("ctx".to_string(), (ctx.shape.clone(), Vec::new()))]);
        assert!(read(&fixture, &expected).is_ok(), "the sound checkpoint reads");

        let dir = tempfile::tempdir().unwrap();
        let nan = dir.path().join("model.pth.tar-50");
        let mut src = zip::ZipArchive::new(std::fs::File::open(&fixture).unwrap()).unwrap();
        let mut out = zip::ZipWriter::new(std::fs::File::create(&nan).unwrap());
        let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for i in 0..src.len() {
            let mut f = src.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            if f.name().contains("/data/") {
                for c in bytes.chunks_exact_mut(4) {
                    c.copy_from_slice(&f32::NAN.to_le_bytes());
                }
            }
            out.start_file(f.name(), stored).unwrap();
            out.write_all(&bytes).unwrap();
        }
        out.finish().unwrap();
        let e = read(&nan, &expected).unwrap_err().to_string();
        assert!(
            e.contains(key.as_str()) && e.contains("NaN") && e.contains("not a trained prompt"),
            "{e}"
        );
    }
}

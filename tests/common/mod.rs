//! Shared helpers for the integration tests: fixture paths, reference tensors, safetensors writing.
#![allow(dead_code)]

pub mod method_harness;
pub mod suite_env;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use gram_bench::clip::weights::SafetensorsStore;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

pub type B = gram_bench::backend::Cpu;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub struct Reference(SafetensorsStore);

impl Reference {
    pub fn load() -> Self {
        Self(SafetensorsStore::open(&[fixture("reference.safetensors")]).expect("reference fixture"))
    }
    pub fn get(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.0.read(name).unwrap_or_else(|e| panic!("{e}"))
    }
    /// Integer tensors (ids) as rows of u32.
    pub fn ids(&self, name: &str) -> Vec<Vec<u32>> {
        let shape = self.0.shape(name).expect("ids tensor").to_vec();
        let raw = read_raw(&fixture("reference.safetensors"), name);
        let vals: Vec<u32> = raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        vals.chunks(shape[1]).map(<[u32]>::to_vec).collect()
    }
    pub fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// Raw bytes of one tensor (for non-float dtypes the store does not convert).
pub fn read_raw(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().to_vec()
}

pub fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    (dims, t.into_data().convert::<f32>().into_vec::<f32>().unwrap())
}

/// Max |a - b|, after checking the shapes agree.
pub fn max_diff(what: &str, got: (Vec<usize>, Vec<f32>), want: (Vec<usize>, Vec<f32>)) -> f32 {
    assert_eq!(got.0, want.0, "{what}: shape");
    got.1
        .iter()
        .zip(&want.1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Rewrites a safetensors file tensor by tensor: `f` may change a tensor's name, dtype or data, or drop it.
pub type Tensor32 = (Vec<usize>, Vec<f32>);
pub fn rewrite(src: &Path, dst: &Path, dtype: Dtype, mut f: impl FnMut(&str, Tensor32) -> Vec<(String, Tensor32)>) {
    let store = SafetensorsStore::open(&[src.to_path_buf()]).unwrap();
    let mut out: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names {
        for (n, (shape, data)) in f(&name, store.read(&name).unwrap()) {
            let bytes: Vec<u8> = match dtype {
                Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => data
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                Dtype::BF16 => data
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            out.insert(n, (shape, bytes));
        }
    }
    let views: Vec<(String, TensorView)> = out
        .iter()
        .map(|(n, (s, b))| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

/// Copies the HF fixture directory to `dst` (so a test can edit it), optionally with new weights.
pub fn copy_hf_dir(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("tiny-clip-hf").join(f), dst.join(f)).unwrap();
    }
}

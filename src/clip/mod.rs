//! The CLIP backbone: configs, model, weight import, tokenizer and preprocessing.

pub mod blocks;
pub mod checkpoint;
pub mod config;
pub mod export;
pub mod flops;
pub mod fused;
pub mod model;
pub(crate) mod pickle;
pub mod preprocess;
pub mod text;
pub mod tokenizer;
pub mod torch_zip;
pub mod vision;
pub mod weights;
pub mod workload;

pub use checkpoint::{load_clip, LoadOptions, LoadedClip};
pub use config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
pub(crate) use export::save_hf_dir;
pub use model::{Clip, DeepPrompts, PromptSlot, VisionPrompts};

pub use preprocess::Preprocess;
pub use tokenizer::ClipTokenizer;
pub(crate) use weights::Layout;
pub use weights::RandomInit;

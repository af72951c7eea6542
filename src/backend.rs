//! Backend selection. The CPU backend is always built; `wgpu` and `cuda` are cargo features.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;

use crate::error::{Error, Result};

/// The default CPU backend (burn-flex: measured faster than ndarray here, see README).
pub type Cpu = burn::backend::Flex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Cpu,
    Wgpu,
    Cuda,
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(Error::Input(format!("unknown backend `{s}` (cpu, wgpu, cuda)"))),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

/// Work that is generic over the backend; [`dispatch`] picks the concrete one at run time.
pub trait WithBackend {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

impl BackendKind {
    /// An error naming the cargo feature when this binary was built without the backend.
    pub fn ensure_compiled(self) -> Result<()> {
        let compiled = match self {
            Self::Cpu => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        };
        if compiled {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "backend `{self}` is not compiled into this binary; rebuild with `cargo build --release --features {self}`"
            )))
        }
    }
}

pub fn dispatch<W: WithBackend>(kind: BackendKind, work: W) -> Result<W::Output> {
    kind.ensure_compiled()?;
    match kind {
        BackendKind::Cpu => Ok(work.run::<Cpu>(Default::default())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(work.run::<burn::backend::Wgpu>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(work.run::<burn::backend::Cuda>(Default::default())),
        #[allow(unreachable_patterns)]
        other => Err(Error::Input(format!(
            "backend `{other}` is not compiled into this binary"
        ))),
    }
}

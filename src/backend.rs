//! Backend selection. The CPU backend is always built; `wgpu` and `cuda` are cargo features.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::{get_device_settings, set_default_float_dtype, Backend, DeviceError};
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default CPU backend (burn-flex: measured faster than ndarray here, see docs/performance.md,
/// "Performance").
pub type Cpu = burn::backend::Flex;

/// Whether this CPU runs the CPU backend's SIMD kernels on the path every committed embedded-world
/// number was made with: x86-64-v3 (AVX2, FMA and the rest of macerator's V3 set). macerator is
/// patched to never take AVX-512 kernels (vendor/macerator/PATCHED.md), so any AVX2 CPU computes
/// the same bits; an older x86-64 CPU or another architecture takes narrower or other kernels,
/// whose sums round differently.
pub(crate) fn cpu_kernels_match_the_baselines() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("lzcnt")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The warning a run on the embedded world prints when [`cpu_kernels_match_the_baselines`] is
/// false: its numbers can differ in the last digits from baselines saved on an AVX2 machine.
pub(crate) const OTHER_KERNELS_WARNING: &str = "warning: this CPU has no AVX2/FMA (x86-64-v3): the CPU \
backend's kernels take another path here, so the embedded world's numbers can differ in their last \
digits from those in reports/ and baselines/ (made on AVX2 and AVX-512 machines, which agree bit for \
bit); `check --baseline` may flag such differences";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// The float format a suite's cells compute in: every tensor (weights, activations, learned
/// prompts, optimizer state) is stored and computed at it, as upstream's `PREC fp16` runs CLIP
/// converted to half; layer norms compute in f32 and cast back, as CLIP's `LayerNorm` does.
/// burn fixes a device's float format once per process (at the first tensor), so one process
/// computes at one precision: `run` sets the suite's before anything else touches the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::Bf16 => FloatDType::BF16,
        }
    }

    /// f32: the format every record made before precision was a setting was computed in (keys
    /// leave it out, so those records keep their keys).
    pub(crate) fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            _ => Err(Error::Input(format!("unknown precision `{s}` (f32, f16, bf16)"))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sets `device`'s float format to `precision` for the rest of this process: an error when the
/// backend cannot compute at it there, or when this process already computed at another one.
pub(crate) fn set_precision<B: Backend>(device: &B::Device, precision: Precision) -> Result<()> {
    let want = precision.dtype();
    match set_default_float_dtype::<B>(device, want) {
        Ok(()) => Ok(()),
        Err(DeviceError::UnsupportedDType { .. }) => Err(Error::Input(format!(
            "precision {precision}: this backend cannot compute at it on {device:?}"
        ))),
        Err(_) => {
            let have = get_device_settings::<B>(device).float_dtype;
            if have == want {
                Ok(())
            } else {
                Err(Error::Run(format!(
                    "precision {precision}: this process already computed at {have:?} on {device:?}, and a \
                     device's float format is fixed once per process; run the {precision} work in a \
                     process of its own"
                )))
            }
        }
    }
}

/// Work that is generic over the backend; [`dispatch`] picks the concrete one at run time.
pub(crate) trait WithBackend {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

impl BackendKind {
    /// An error naming the cargo feature when this binary was built without the backend.
    pub(crate) fn ensure_compiled(self) -> Result<()> {
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

/// Runs `work` on backend `kind`'s default device at `precision` (see [`set_precision`]).
pub(crate) fn dispatch<W: WithBackend>(kind: BackendKind, precision: Precision, work: W) -> Result<W::Output> {
    fn on<B: Backend, W: WithBackend>(precision: Precision, work: W) -> Result<W::Output> {
        let device = B::Device::default();
        set_precision::<B>(&device, precision)?;
        Ok(work.run::<B>(device))
    }
    kind.ensure_compiled()?;
    match kind {
        BackendKind::Cpu => on::<Cpu, W>(precision, work),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => on::<burn::backend::Wgpu, W>(precision, work),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => on::<burn::backend::Cuda, W>(precision, work),
        #[allow(unreachable_patterns)]
        other => Err(Error::Input(format!(
            "backend `{other}` is not compiled into this binary"
        ))),
    }
}

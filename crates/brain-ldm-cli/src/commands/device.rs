//! `--device`: where the models run.

use anyhow::{bail, Context};
use candle_core::Device;
use std::fmt;
use std::str::FromStr;

/// The device a command asks for: `auto` (the first CUDA GPU when the tool was built with
/// `--features cuda` and one is present, else the CPU), `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first CUDA GPU if there is one (and CUDA was built in), else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("'{s}' is not a device: expected auto, cpu, cuda or cuda:N")
                }),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `auto` falls back to the CPU, saying why on stderr, when the tool
    /// was built with CUDA but no GPU can be opened.
    ///
    /// # Errors
    /// `cuda[:N]` when the tool was built without CUDA, or when that GPU cannot be opened.
    pub fn open(self) -> anyhow::Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto if !cfg!(feature = "cuda") => Ok(Device::Cpu),
            Self::Auto => Device::new_cuda(0).or_else(|e| {
                eprintln!("no CUDA GPU could be opened ({e}); running on the CPU");
                Ok(Device::Cpu)
            }),
            Self::Cuda(_) if !cfg!(feature = "cuda") => bail!(
                "--device {self}: this brain-ldm was built without CUDA; build it with \
                 `--features cuda` (docs/cuda.md)"
            ),
            Self::Cuda(n) => Device::new_cuda(n).with_context(|| format!("--device {self}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_others() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        }
        for choice in [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda(2)] {
            assert_eq!(choice.to_string().parse(), Ok(choice));
        }
    }

    #[test]
    fn cpu_opens_everywhere() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error_and_auto_is_the_cpu() {
        let err = DeviceChoice::Cuda(1).open().unwrap_err().to_string();
        assert!(
            err.contains("--device cuda:1") && err.contains("--features cuda"),
            "{err}"
        );
        assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
    }
}

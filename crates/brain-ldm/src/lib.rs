//! brain-ldm: 3D brain MRI latent diffusion in Rust (facade crate).
pub use brain_ldm_nn as nn;

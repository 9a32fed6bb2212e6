//! The DeepSeek LLM paper's scaling-law toolkit (Section 3):
//!
//! - [`flops`]: a model's `M`, `6N1`, `6N2` (Table 3), parameter counts and exact matmul FLOPs
//!   (the counts themselves are `dsllm_model::flops`, shared with the trainer);
//! - [`shape`]: model shapes for a target `M`;
//! - [`plan`]: hyperparameter grids and IsoFLOP sweeps as runnable Makefile fragments;
//! - [`collect`]: finished ds-pretrain runs into one Parquet table;
//! - [`fit`]: near-optimal sets, Eq. 1 and Eq. 4 power laws, IsoFLOP minima, loss vs compute,
//!   bootstrap intervals; [`synthetic`]: runs drawn from known laws to check the fits;
//! - [`plots`] (feature `plots`): the paper's Figures 2-5 as PNG;
//! - [`budget`]: what `ds-pretrain --budget C` trains (shape, tokens, batch, learning rate).

pub mod budget;
pub mod collect;
pub mod fit;
pub mod flops;
pub mod math;
pub mod plan;
#[cfg(feature = "plots")]
pub mod plots;
pub mod record;
pub mod shape;
pub mod synthetic;

pub use fit::{fit, FitSettings, Fits, LawFit};
pub use record::{Metric, RunRecord};

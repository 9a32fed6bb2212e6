//! What every dsllm figure shares: a font for plotters' text, and PNGs that appear complete or
//! not at all.
//!
//! Text needs a TrueType font; plotters (built without font-kit) gets one from `DSLLM_FONT`, the
//! usual system paths, or else the DejaVu Sans compiled into the binary, so figures keep their
//! text on machines without system fonts (GPU nodes, slim containers).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Where to look for a font, after `DSLLM_FONT`.
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a font as plotters' "sans-serif" once (a system one if present, else the embedded
/// DejaVu Sans); false only if even that failed to parse.
pub fn font_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let env = std::env::var("DSLLM_FONT").ok();
        let candidates = env.iter().map(String::as_str).chain(FONT_PATHS);
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps fonts for the whole process.
                if register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok() {
                    return true;
                }
            }
        }
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    })
}

/// plotters' errors as anyhow's.
pub trait Plotted<T> {
    fn plotted(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> Plotted<T> for std::result::Result<T, E> {
    fn plotted(self) -> Result<T> {
        self.map_err(|e| anyhow!("{e}"))
    }
}

/// Draws into `png` through a temporary file renamed into place.
pub fn draw_png(
    png: &Path,
    size: (u32, u32),
    body: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<PathBuf> {
    let name = png.file_name().and_then(|n| n.to_str()).unwrap_or("figure");
    let temp = png.with_file_name(format!(".{name}.tmp.png"));
    {
        let root = BitMapBackend::new(&temp, size).into_drawing_area();
        root.fill(&WHITE).plotted()?;
        body(&root)?;
        root.present().map_err(|e| anyhow!("cannot write {}: {e}", temp.display()))?;
    }
    std::fs::rename(&temp, png).with_context(|| format!("cannot rename {} to {}", temp.display(), png.display()))?;
    Ok(png.to_path_buf())
}

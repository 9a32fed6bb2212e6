//! The one progress style of the project: a bar on stderr, silent when stderr is not a terminal
//! (CI logs and pipes stay clean).

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar counting `len` units of `unit` (e.g. "files", "docs", "MB").
pub fn bar(len: u64, message: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), target());
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg:>12}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// A counter without a known total (streams).
pub fn spinner(message: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, target());
    pb.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {{msg:>12}} [{{elapsed_precise}}] {{pos}} {unit} ({{per_sec}})"))
            .expect("valid template"),
    );
    pb.set_message(message.to_string());
    pb
}

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

//! The ds-sft and ds-dpo stages: arguments, inputs, the manifest (every record accounted for),
//! measurements before and after, checkpoints and the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use dsllm_core::manifest::{Counts, Stage, StageStart};
use dsllm_core::parquet_io::{ParquetSink, WrittenFile};
use dsllm_core::inputs::TaskSlice;
use dsllm_model::checkpoint::MODEL_FILE;
use dsllm_model::{Backend, CpuBackend, Llama};
use dsllm_eval::{run_task, EvalTokenizer, Evaluator, RunContext, TaskSpec};
use dsllm_tokens::DsTokenizer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::{ChatTemplate, Encoded};
use crate::data::{conversation, preference_pair, read_records, task_item, PreferencePair, TaskItem};
use crate::dpo::{on_policy_pairs, train_dpo, DpoConfig};
use crate::measure::{preference_rate, task_accuracy};
use crate::sft::{train_sft, SftConfig};
use crate::{choose_backend, load_model, resolve_checkpoint, save_model, sequence_logps, ChosenBackend};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const REPORT_FILE: &str = "report.json";
pub const REFERENCE_LOGPS_FILE: &str = "reference_logps.parquet";
/// ds-dpo --on-policy's pairs, in TRL's format.
pub const ON_POLICY_FILE: &str = "on_policy_pairs.jsonl";
/// Categories the second SFT stage leaves out (the paper's: math and code).
pub const STAGE2_EXCLUDED: [&str; 2] = ["math", "code"];

/// What both stages take besides their hyperparameters.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct CommonArgs {
    /// Starting model: a checkpoint folder, or a run folder (its `latest` checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// Tokenizer folder (ds-tokenizer's); its files are copied into the checkpoints.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Training files: JSON, JSONL or Parquet (optionally .gz).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Run folder: checkpoints, metrics.jsonl, report.json, _manifest.json.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Held-out task items in GSM8K's format (`question`, `answer` ending `#### n`): accuracy
    /// and repetition ratio by greedy decoding, before and after.
    #[arg(long)]
    pub eval_task: Option<PathBuf>,
    /// Held-out items used from --eval-task (0: all).
    #[arg(long, default_value_t = 0)]
    pub eval_items: usize,
    /// Token budget of each greedy answer.
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// ds-eval task files (`ds-synth --align` writes some under `tasks/`) run before and after
    /// through ds-eval's library, exactly as `ds-eval run` scores them; their figures go to the
    /// report and are printed.
    #[arg(long, num_args = 1..)]
    pub eval_tasks: Vec<PathBuf>,
    /// Folder the task files' relative `data` paths start from (ds-eval's --data-root).
    #[arg(long, default_value = ".")]
    pub eval_data_root: PathBuf,
    /// TOML file of hyperparameters (pipelines/configs/sft-7b.toml, dpo.toml ...); flags
    /// given on the command line win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    pub backend: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rerun even if the folder's manifest matches.
    #[arg(long)]
    pub force: bool,
}

/// ds-sft's hyperparameters (left out: the --config file's, else the paper's 7B ones).
#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftFlags {
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Row length conversations are packed into (default: the model's context).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Packed rows per forward/backward.
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// Two-stage SFT: after the epochs on all data, this many epochs without math and code
    /// conversations (0: one stage).
    #[arg(long)]
    pub stage2_epochs: Option<usize>,
    /// Peak LR of the second stage (default: the first stage's).
    #[arg(long)]
    pub stage2_lr: Option<f64>,
}

/// ds-dpo's hyperparameters (left out: the --config file's, else the paper's).
#[derive(clap::Args, Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoFlags {
    #[arg(long)]
    pub beta: Option<f64>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Pairs per forward/backward.
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// Pairs longer than this (prompt + answer tokens) are left out (default: the model's context).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Weight of an SFT term on the chosen answers added to the DPO loss (DPO+NLL, TRL's
    /// rpo_alpha; default 0, plain DPO as the paper).
    #[arg(long)]
    pub nll_weight: Option<f64>,
}

fn file_flags<T: for<'de> Deserialize<'de> + Default>(path: &Option<PathBuf>) -> Result<T> {
    match path {
        None => Ok(T::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: not a valid hyperparameter file", p.display()))
        }
    }
}

fn merge<T: Copy>(cli: Option<T>, file: Option<T>, default: T) -> T {
    cli.or(file).unwrap_or(default)
}

fn load_tasks(common: &CommonArgs) -> Result<Vec<TaskSpec>> {
    common
        .eval_tasks
        .iter()
        .map(|path| {
            let mut spec = TaskSpec::from_file(path)?;
            if common.eval_items > 0 {
                spec.limit = Some(common.eval_items);
            }
            if !spec.data_path(&common.eval_data_root).exists() {
                bail!("{}: task {} has no data at {}", path.display(), spec.name, spec.data_path(&common.eval_data_root).display());
            }
            Ok(spec)
        })
        .collect()
}

/// `specs` run on `model` by ds-eval's library: per task its headline metric's name, its
/// metrics and item count. Gives the model back.
fn eval_tasks<B: Backend>(model: Llama<B>, common: &CommonArgs, specs: &[TaskSpec]) -> Result<(Llama<B>, Value)> {
    if specs.is_empty() {
        return Ok((model, Value::Null));
    }
    let tokenizer = EvalTokenizer::load(&common.tokenizer, &model.config)?;
    let mut evaluator = Evaluator::new(model, tokenizer);
    let ctx = RunContext { data_root: &common.eval_data_root, tokenizer_dir: &common.tokenizer, progress: &|_, _| {} };
    let mut out = serde_json::Map::new();
    for spec in specs {
        let result = run_task(&mut evaluator, spec, &ctx)?;
        out.insert(result.name.clone(), json!({"headline": result.headline, "metrics": result.metrics, "items": result.items}));
    }
    Ok((evaluator.model, Value::Object(out)))
}

/// The file ds-dpo writes beside report.json: the chain's table (see [`chain_table`]).
pub const CHAIN_TABLE_FILE: &str = "alignment.md";

/// One column of the chain table: a ds-eval task's metric, by name.
const CHAIN_COLUMNS: [(&str, &str, &str); 3] = [
    ("digit_reversal", "exact_match", "task accuracy (digit_reversal)"),
    ("preferred_answer", "exact_match", "preferred answer (greedy = chosen)"),
    ("preferred_logprob", "acc", "log P(chosen) > log P(rejected)"),
];

/// The before/after table of base model -> SFT -> DPO, from ds-sft's report (`sft`: its
/// `eval_before` is the base model, `before`'s repetition ratio too) and ds-dpo's (`dpo`: its
/// `eval_before` is the SFT model, `eval_after` the DPO model). Figures are ds-eval's (run
/// through its library on the held-out sets) and the repetition ratio of greedy answers to the
/// held-out task prompts; a figure a stage did not measure shows as "-".
pub fn chain_table(sft: &Value, dpo: &Value) -> String {
    let rows: [(&str, &Value, &Value); 3] = [
        ("base (pretrained)", &sft["eval_before"], &sft["before"]),
        ("SFT", &dpo["eval_before"], &dpo["before"]["task"]),
        ("SFT + DPO", &dpo["eval_after"], &dpo["after"]["task"]),
    ];
    let items = |name: &str| [&sft["eval_before"], &dpo["eval_after"]].iter().find_map(|e| e[name]["items"].as_u64());
    let mut header = String::from("| model |");
    let mut rule = String::from("|---|");
    for (name, _, label) in CHAIN_COLUMNS {
        header += &format!(" {label}{} |", items(name).map(|n| format!(", {n} items")).unwrap_or_default());
        rule += "---|";
    }
    header += " repetition ratio |";
    rule += "---|";
    let figure = |v: &Value| v.as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let mut out = format!("{header}\n{rule}\n");
    for (model, eval, task) in rows {
        out += &format!("| {model} |");
        for (name, metric, _) in CHAIN_COLUMNS {
            out += &format!(" {} |", figure(&eval[name]["metrics"][metric]));
        }
        out += &format!(" {} |\n", figure(&task["repetition_ratio"]));
    }
    out
}

/// Prints a report's before/after figures: each ds-eval task's metrics, the repetition ratio
/// (SFT), the training's last reward figures (DPO), and ds-dpo's chain table when it has one.
pub fn print_summary(tool: &str, report: &Value) {
    let (before, after) = (&report["eval_before"], &report["eval_after"]);
    for (name, result) in after.as_object().into_iter().flatten() {
        for (metric, value) in result["metrics"].as_object().into_iter().flatten() {
            let old = before[name]["metrics"][metric].as_f64().unwrap_or(f64::NAN);
            eprintln!("{tool}: ds-eval {name} {metric}: {old:.3} -> {:.3} ({} held-out items)", value.as_f64().unwrap_or(f64::NAN), result["items"]);
        }
    }
    let own = |m: &Value, key: &str| m[key].as_f64().unwrap_or(f64::NAN);
    let (b, a) = (&report["before"], &report["after"]);
    // ds-sft's before/after are task reports; ds-dpo's hold one under "task".
    let (bt, at) = if b.get("task").is_some() { (&b["task"], &a["task"]) } else { (b, a) };
    if bt.get("repetition_ratio").is_some() {
        eprintln!(
            "{tool}: greedy answers to {} held-out prompts: task accuracy {:.3} -> {:.3}, repetition ratio {:.3} -> {:.3}, unfinished {:.3} -> {:.3}",
            at["items"],
            own(bt, "accuracy"),
            own(at, "accuracy"),
            own(bt, "repetition_ratio"),
            own(at, "repetition_ratio"),
            own(bt, "unfinished_ratio"),
            own(at, "unfinished_ratio")
        );
    }
    if let (Some(bp), Some(ap)) = (b.get("preferences").filter(|p| !p.is_null()), a.get("preferences").filter(|p| !p.is_null())) {
        eprintln!(
            "{tool}: held-out pairs: greedy answer = chosen {:.3} -> {:.3}, = rejected {:.3} -> {:.3}; log-prob prefers chosen {:.3} -> {:.3}",
            own(bp, "generated_chosen_rate"),
            own(ap, "generated_chosen_rate"),
            own(bp, "generated_rejected_rate"),
            own(ap, "generated_rejected_rate"),
            own(bp, "logp_preferred_rate"),
            own(ap, "logp_preferred_rate")
        );
    }
    if let Some(train) = report.get("train") {
        eprintln!(
            "{tool}: training: loss {:.4} -> {:.4}, reward accuracy {:.3}, reward margin {:.3}, KL to the reference {:.4} nats/token",
            own(train, "loss_first"),
            own(train, "loss_last"),
            own(train, "reward_accuracy_last"),
            own(train, "reward_margin_last"),
            own(train, "kl_per_token_last")
        );
    }
    if let Some(table) = report.get("chain_table").and_then(Value::as_str) {
        eprintln!("{tool}: base model -> SFT -> DPO on the held-out sets (ds-eval's figures):\n{table}");
    }
}

fn load_items(path: &Option<PathBuf>, limit: usize) -> Result<Vec<TaskItem>> {
    let Some(path) = path else { return Ok(Vec::new()) };
    let mut items = read_records(path)?.iter().enumerate().map(|(i, r)| task_item(r).with_context(|| format!("{} record {i}", path.display()))).collect::<Result<Vec<_>>>()?;
    if limit > 0 {
        items.truncate(limit);
    }
    Ok(items)
}

/// Inputs hashed into the manifest: data files, the model's weights and config, eval files.
fn input_files(common: &CommonArgs, checkpoint: &Path, extra: &[&Option<PathBuf>]) -> Vec<PathBuf> {
    let mut files = common.data.clone();
    files.push(checkpoint.join(MODEL_FILE));
    files.extend(extra.iter().filter_map(|p| (*p).clone()));
    files.extend(common.eval_task.clone());
    files.extend(common.eval_tasks.iter().cloned());
    files
}

struct Metrics {
    file: std::io::BufWriter<std::fs::File>,
}

impl Metrics {
    fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { file: std::io::BufWriter::new(file) })
    }
    fn write(&mut self, value: &impl Serialize) -> Result<()> {
        use std::io::Write;
        serde_json::to_writer(&mut self.file, value)?;
        self.file.write_all(b"\n")?;
        self.file.flush()?;
        Ok(())
    }
}

/// Runs `body` with the backend `common.backend` asks for.
macro_rules! with_backend {
    ($tool:expr, $common:expr, |$backend:ident| $body:expr) => {
        match choose_backend($tool, &$common.backend)? {
            ChosenBackend::Cpu => {
                let $backend = CpuBackend;
                $body
            }
            ChosenBackend::Cuda(b) => {
                let $backend = *b;
                $body
            }
        }
    };
}

fn finish_report(tool: &str, stage: Stage, counts: Counts, outputs: Vec<WrittenFile>, report: Value, output: &Path) -> Result<Value> {
    print_summary(tool, &report);
    let report_path = output.join(REPORT_FILE);
    dsllm_core::atomic::write_file(&report_path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    let mut extra = BTreeMap::new();
    extra.insert("report".to_string(), report.clone());
    let mut outputs = outputs;
    outputs.push(WrittenFile { path: report_path.clone(), rows: 1, bytes: std::fs::metadata(&report_path)?.len() });
    stage.finish(counts, outputs, extra)?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// SFT

pub const SFT_TOOL: &str = "ds-sft";

/// Starts `tool`'s stage, or (outputs up to date) prints the saved report and returns the
/// summary to print instead.
fn begin_stage(tool: &str, common: &CommonArgs, params: Value, inputs: &[PathBuf]) -> Result<std::result::Result<Stage, Value>> {
    Ok(match Stage::begin(tool, &common.output, params, inputs, TaskSlice::default(), common.force)? {
        StageStart::UpToDate(m) => {
            let report = m.extra.get("report").cloned().unwrap_or(Value::Null);
            print_summary(tool, &report);
            Err(json!({"tool": tool, "output": common.output, "skipped_up_to_date": true, "report": report}))
        }
        StageStart::Run(stage) => Ok(stage),
    })
}

pub fn run_sft(common: &CommonArgs, flags: &SftFlags) -> Result<Value> {
    let started = Instant::now();
    let file: SftFlags = file_flags(&common.config)?;
    let checkpoint = resolve_checkpoint(&common.model)?;
    let params = json!({"common": common, "flags": flags, "file": file, "checkpoint": checkpoint});
    let inputs = input_files(common, &checkpoint, &[&common.config]);
    let stage = match begin_stage(SFT_TOOL, common, params, &inputs)? {
        Ok(stage) => stage,
        Err(up_to_date) => return Ok(up_to_date),
    };
    let tokenizer = DsTokenizer::load(&common.tokenizer).with_context(|| format!("cannot load the tokenizer in {}", common.tokenizer.display()))?;
    let template = ChatTemplate::new(&tokenizer)?;
    let items = load_items(&common.eval_task, common.eval_items)?;
    let tasks = load_tasks(common)?;
    with_backend!(SFT_TOOL, common, |backend| {
        let model = load_model(backend, &checkpoint)?;
        sft_on(model, common, flags, &file, &template, &items, &tasks, stage, started)
    })
}

#[allow(clippy::too_many_arguments)]
fn sft_on<B: Backend>(
    mut model: Llama<B>,
    common: &CommonArgs,
    flags: &SftFlags,
    file: &SftFlags,
    template: &ChatTemplate,
    items: &[TaskItem],
    tasks: &[TaskSpec],
    stage: Stage,
    started: Instant,
) -> Result<Value> {
    let defaults = SftConfig::default();
    let seq_len = merge(flags.seq_len, file.seq_len, model.config.max_position_embeddings);
    if seq_len > model.config.max_position_embeddings {
        bail!("--seq-len {seq_len} exceeds the model's max_position_embeddings {}", model.config.max_position_embeddings);
    }
    let config = SftConfig {
        seq_len,
        micro_batch: merge(flags.micro_batch, file.micro_batch, defaults.micro_batch),
        grad_accum: merge(flags.grad_accum, file.grad_accum, defaults.grad_accum),
        epochs: merge(flags.epochs, file.epochs, defaults.epochs),
        learning_rate: merge(flags.lr, file.lr, defaults.learning_rate),
        warmup_ratio: merge(flags.warmup_ratio, file.warmup_ratio, defaults.warmup_ratio),
        seed: common.seed,
        ..defaults
    };
    let stage2_epochs = merge(flags.stage2_epochs, file.stage2_epochs, 0);
    let stage2_lr = merge(flags.stage2_lr, file.stage2_lr, config.learning_rate);

    // Read and template every record; account for each one.
    let mut counts = Counts::default();
    let mut examples: Vec<(Encoded, String)> = Vec::new();
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    for path in &common.data {
        for (i, record) in read_records(path)?.iter().enumerate() {
            let parsed = conversation(record).and_then(|c| Ok((template.encode(&c.messages)?, c.category)));
            match parsed {
                Err(error) => {
                    if counts.quarantined == 0 {
                        eprintln!("{SFT_TOOL}: {} record {i} quarantined: {error:#}", path.display());
                    }
                    counts.quarantine("unparseable");
                }
                Ok((encoded, _)) if encoded.tokens.len() > seq_len + 1 => counts.remove("longer_than_seq_len"),
                Ok((encoded, category)) => {
                    counts.keep();
                    *by_category.entry(category.clone()).or_insert(0) += 1;
                    examples.push((encoded, category));
                }
            }
        }
    }
    if examples.is_empty() {
        bail!("no usable conversation in {:?} ({counts:?})", common.data);
    }
    eprintln!("{SFT_TOOL}: {} conversations ({} removed as longer than {seq_len} tokens, {} quarantined); categories {by_category:?}", examples.len(), counts.removed, counts.quarantined);

    let measure = |model: &mut Llama<B>| -> Result<Option<Value>> {
        if items.is_empty() {
            return Ok(None);
        }
        let report = task_accuracy(model, template, items, common.max_new_tokens)?;
        Ok(Some(serde_json::to_value(report)?))
    };
    let before = measure(&mut model)?;
    if let Some(b) = &before {
        eprintln!("{SFT_TOOL}: before: task accuracy {:.3}, repetition ratio {:.3}", b["accuracy"], b["repetition_ratio"]);
    }
    let (returned, tasks_before) = eval_tasks(model, common, tasks)?;
    model = returned;

    let mut metrics = Metrics::create(&common.output.join(METRICS_FILE))?;
    metrics.write(&json!({"step": 0, "run": {"sft": config, "stage2_epochs": stage2_epochs, "stage2_lr": stage2_lr, "model": model.config, "before": before}}))?;
    let pad = template.tokens.pad;
    let all: Vec<Encoded> = examples.iter().map(|(e, _)| e.clone()).collect();
    let mut stages = vec![(1usize, all, config.clone())];
    if stage2_epochs > 0 {
        let general: Vec<Encoded> = examples.iter().filter(|(_, c)| !STAGE2_EXCLUDED.contains(&c.as_str())).map(|(e, _)| e.clone()).collect();
        if general.is_empty() {
            bail!("the second stage has no data: every conversation is math or code");
        }
        stages.push((2, general, SftConfig { epochs: stage2_epochs, learning_rate: stage2_lr, ..config.clone() }));
    }
    let mut checkpoints = Vec::new();
    let mut last_loss = None;
    let mut steps = 0;
    for (number, data, stage_config) in &stages {
        let packed = model.backend.supports_segmented_attention();
        if !packed && *number == 1 {
            eprintln!("{SFT_TOOL}: this backend has no segment-aware attention yet: one conversation per row, not packed");
        }
        let total = crate::sft::planned_steps(data, stage_config, pad, *number, packed);
        let bar = dsllm_core::progress::bar(total, &format!("sft stage {number}"), "steps");
        let history = train_sft(&mut model, data, stage_config, pad, *number, |step| {
            bar.set_position(step.step);
            bar.set_message(format!("loss {:.3}", step.loss));
            metrics.write(step)
        })?;
        bar.finish_and_clear();
        last_loss = history.last().map(|s| s.loss);
        steps += history.len();
        let state = json!({"tool": SFT_TOOL, "stage": number, "steps": history.len(), "conversations": data.len(), "config": stage_config});
        checkpoints.push(save_model(&model, &common.output, &format!("stage{number}"), state, &common.tokenizer)?);
        eprintln!("{SFT_TOOL}: stage {number}: {} steps over {} conversations, last loss {:.4}", history.len(), data.len(), last_loss.unwrap_or(f64::NAN));
    }
    let after = measure(&mut model)?;
    let (model, tasks_after) = eval_tasks(model, common, tasks)?;
    drop(model);
    metrics.write(&json!({"step": steps, "after": after}))?;
    let report = json!({
        "tool": SFT_TOOL,
        "output": common.output,
        "checkpoint": checkpoints.last(),
        "checkpoints": checkpoints,
        "conversations": examples.len(),
        "by_category": by_category,
        "steps": steps,
        "train_loss": last_loss,
        "sft": config,
        "stage2_epochs": stage2_epochs,
        "before": before,
        "after": after,
        "eval_before": tasks_before,
        "eval_after": tasks_after,
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    finish_report(SFT_TOOL, stage, counts, Vec::new(), report, &common.output)
}

// ---------------------------------------------------------------------------------------------
// DPO

pub const DPO_TOOL: &str = "ds-dpo";

/// ds-dpo's own inputs.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct DpoInputs {
    /// Held-out preference pairs: the preferred-answer rate before and after.
    #[arg(long)]
    pub eval_preferences: Option<PathBuf>,
    /// Reference log-probs computed before (a reference_logps.parquet of an earlier run on the
    /// same pairs and model); default: computed now and stored in the run folder.
    #[arg(long)]
    pub reference_logps: Option<PathBuf>,
    /// On-policy pairs: before training, the starting model answers each pair's prompt
    /// (greedy, --max-new-tokens); where it answers the chosen one the pair is left out, else
    /// its own answer becomes the rejected one (written to on_policy_pairs.jsonl).
    #[arg(long)]
    pub on_policy: bool,
}

pub fn run_dpo(common: &CommonArgs, inputs: &DpoInputs, flags: &DpoFlags) -> Result<Value> {
    let started = Instant::now();
    let file: DpoFlags = file_flags(&common.config)?;
    let checkpoint = resolve_checkpoint(&common.model)?;
    let params = json!({"common": common, "inputs": inputs, "flags": flags, "file": file, "checkpoint": checkpoint});
    let hashed = input_files(common, &checkpoint, &[&common.config, &inputs.eval_preferences, &inputs.reference_logps]);
    let stage = match begin_stage(DPO_TOOL, common, params, &hashed)? {
        Ok(stage) => stage,
        Err(up_to_date) => return Ok(up_to_date),
    };
    let tokenizer = DsTokenizer::load(&common.tokenizer).with_context(|| format!("cannot load the tokenizer in {}", common.tokenizer.display()))?;
    let template = ChatTemplate::new(&tokenizer)?;
    let items = load_items(&common.eval_task, common.eval_items)?;
    let tasks = load_tasks(common)?;
    let eval_pairs = match &inputs.eval_preferences {
        Some(path) => {
            let mut pairs = read_records(path)?.iter().enumerate().map(|(i, r)| preference_pair(r).with_context(|| format!("{} record {i}", path.display()))).collect::<Result<Vec<_>>>()?;
            if common.eval_items > 0 {
                pairs.truncate(common.eval_items);
            }
            pairs
        }
        None => Vec::new(),
    };
    with_backend!(DPO_TOOL, common, |backend| {
        let model = load_model(backend, &checkpoint)?;
        dpo_on(model, common, inputs, flags, &file, &template, &items, &eval_pairs, &tasks, stage, started)
    })
}

fn write_reference(path: &Path, logps: &[(f64, f64)]) -> Result<WrittenFile> {
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("pair", DataType::UInt64, false),
        Field::new("chosen_logp", DataType::Float64, false),
        Field::new("rejected_logp", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(UInt64Array::from_iter_values(0..logps.len() as u64)),
        std::sync::Arc::new(Float64Array::from_iter_values(logps.iter().map(|l| l.0))),
        std::sync::Arc::new(Float64Array::from_iter_values(logps.iter().map(|l| l.1))),
    ];
    let mut sink = ParquetSink::create(path, schema.clone())?;
    sink.write(&RecordBatch::try_new(schema, columns)?)?;
    Ok(sink.finish()?)
}

fn read_reference(path: &Path, pairs: usize) -> Result<Vec<(f64, f64)>> {
    let records = read_records(path)?;
    if records.len() != pairs {
        bail!("{} holds {} reference log-probs for {pairs} pairs: computed for other data", path.display(), records.len());
    }
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |k: &str| r.get(k).and_then(Value::as_f64).with_context(|| format!("{} row {i}: no {k}", path.display()));
            Ok((f("chosen_logp")?, f("rejected_logp")?))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn dpo_on<B: Backend>(
    mut model: Llama<B>,
    common: &CommonArgs,
    inputs: &DpoInputs,
    flags: &DpoFlags,
    file: &DpoFlags,
    template: &ChatTemplate,
    items: &[TaskItem],
    eval_pairs: &[PreferencePair],
    tasks: &[TaskSpec],
    stage: Stage,
    started: Instant,
) -> Result<Value> {
    let defaults = DpoConfig::default();
    let config = DpoConfig {
        beta: merge(flags.beta, file.beta, defaults.beta),
        learning_rate: merge(flags.lr, file.lr, defaults.learning_rate),
        epochs: merge(flags.epochs, file.epochs, defaults.epochs),
        micro_batch: merge(flags.micro_batch, file.micro_batch, defaults.micro_batch),
        grad_accum: merge(flags.grad_accum, file.grad_accum, defaults.grad_accum),
        warmup_ratio: merge(flags.warmup_ratio, file.warmup_ratio, defaults.warmup_ratio),
        nll_weight: merge(flags.nll_weight, file.nll_weight, defaults.nll_weight),
        seed: common.seed,
        ..defaults
    };
    let max_len = merge(flags.max_len, file.max_len, model.config.max_position_embeddings).min(model.config.max_position_embeddings);

    let mut counts = Counts::default();
    let mut pairs = Vec::new();
    for path in &common.data {
        for (i, record) in read_records(path)?.iter().enumerate() {
            let parsed = preference_pair(record).and_then(|p| {
                let prompt = template.encode_prompt(&p.prompt)?;
                let longest = [&p.chosen, &p.rejected].iter().map(|a| template.encode_response(&prompt, a).map(|r| r.0.len())).collect::<Result<Vec<_>>>()?;
                Ok((p, longest.into_iter().max().unwrap_or(0)))
            });
            match parsed {
                Err(error) => {
                    if counts.quarantined == 0 {
                        eprintln!("{DPO_TOOL}: {} record {i} quarantined: {error:#}", path.display());
                    }
                    counts.quarantine("unparseable");
                }
                Ok((_, len)) if len > max_len => counts.remove("longer_than_max_len"),
                Ok((pair, _)) => pairs.push(pair),
            }
        }
    }
    let mut outputs = Vec::new();
    let mut on_policy = Value::Null;
    if inputs.on_policy {
        let bar = dsllm_core::progress::spinner("on-policy answers", "prompts");
        let made = on_policy_pairs(&mut model, template, &pairs, common.max_new_tokens)?;
        bar.finish_and_clear();
        eprintln!(
            "{DPO_TOOL}: on-policy: the model answers {} of {} training prompts with the chosen answer (left out); {} pairs keep its own answer as the rejected one",
            made.already_chosen,
            pairs.len(),
            made.pairs.len()
        );
        for _ in 0..made.already_chosen {
            counts.remove("already_chosen");
        }
        let path = common.output.join(ON_POLICY_FILE);
        let lines: Vec<String> = made
            .pairs
            .iter()
            .map(|p| {
                let prompt: Vec<Value> = p.prompt.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
                json!({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected}).to_string() + "\n"
            })
            .collect();
        dsllm_core::atomic::write_file(&path, lines.concat().as_bytes())?;
        outputs.push(WrittenFile { path, rows: made.pairs.len() as u64, bytes: lines.iter().map(|l| l.len() as u64).sum() });
        on_policy = json!({"prompts": pairs.len(), "already_chosen": made.already_chosen, "pairs": made.pairs.len()});
        pairs = made.pairs;
    }
    for _ in &pairs {
        counts.keep();
    }
    if pairs.is_empty() {
        bail!("no usable preference pair in {:?} ({counts:?})", common.data);
    }
    eprintln!("{DPO_TOOL}: {} pairs ({} removed as longer than {max_len} tokens, {} quarantined)", pairs.len(), counts.removed, counts.quarantined);

    let measure = |model: &mut Llama<B>| -> Result<Value> {
        let task = if items.is_empty() { None } else { Some(task_accuracy(model, template, items, common.max_new_tokens)?) };
        let prefs = if eval_pairs.is_empty() { None } else { Some(preference_rate(model, template, eval_pairs, common.max_new_tokens, config.micro_batch)?) };
        Ok(json!({"task": task, "preferences": prefs}))
    };
    let before = measure(&mut model)?;
    let (returned, tasks_before) = eval_tasks(model, common, tasks)?;
    model = returned;

    // The reference model is the starting policy: its log-probs, once, stored, read back.
    let reference_path = match &inputs.reference_logps {
        Some(path) => path.clone(),
        None => {
            let bar = dsllm_core::progress::spinner("reference log-probs", "pairs");
            let logps = sequence_logps(&mut model, template, &pairs, config.micro_batch)?;
            bar.finish_and_clear();
            let path = common.output.join(REFERENCE_LOGPS_FILE);
            outputs.push(write_reference(&path, &logps)?);
            path
        }
    };
    let reference = read_reference(&reference_path, pairs.len())?;

    let mut metrics = Metrics::create(&common.output.join(METRICS_FILE))?;
    metrics.write(&json!({"step": 0, "run": {"dpo": config, "max_len": max_len, "model": model.config, "reference_logps": reference_path, "before": before}}))?;
    let total = (pairs.len().div_ceil(config.micro_batch * config.grad_accum) * config.epochs) as u64;
    let bar = dsllm_core::progress::bar(total, "dpo", "steps");
    let history = train_dpo(&mut model, template, &pairs, &reference, &config, |step| {
        bar.set_position(step.step);
        bar.set_message(format!("loss {:.3} acc {:.2} margin {:.3}", step.loss, step.reward_accuracy, step.reward_margin));
        metrics.write(step)
    })?;
    bar.finish_and_clear();
    let state = json!({"tool": DPO_TOOL, "steps": history.len(), "pairs": pairs.len(), "config": config});
    let checkpoint = save_model(&model, &common.output, "final", state, &common.tokenizer)?;
    let after = measure(&mut model)?;
    let (model, tasks_after) = eval_tasks(model, common, tasks)?;
    drop(model);
    metrics.write(&json!({"step": history.len(), "after": after, "eval_after": tasks_after}))?;
    // The chain base -> SFT -> DPO, when the starting model is a ds-sft run folder.
    let sft_report = common.model.join(REPORT_FILE);
    let sft_report = match sft_report.exists() {
        true => Some(serde_json::from_str::<Value>(&std::fs::read_to_string(&sft_report)?).with_context(|| format!("{}: not a JSON report", sft_report.display()))?),
        false => None,
    }
    .filter(|r| r["tool"] == SFT_TOOL);
    let mean = |f: fn(&crate::dpo::DpoStep) -> f64| history.iter().map(f).sum::<f64>() / history.len().max(1) as f64;
    let last = history.last();
    let report = json!({
        "tool": DPO_TOOL,
        "output": common.output,
        "checkpoint": checkpoint,
        "pairs": pairs.len(),
        "steps": history.len(),
        "dpo": config,
        "reference_logps": reference_path,
        "on_policy": on_policy,
        "train": {
            "loss_first": history.first().map(|s| s.loss),
            "loss_last": last.map(|s| s.loss),
            "reward_accuracy_mean": mean(|s| s.reward_accuracy),
            "reward_accuracy_last": last.map(|s| s.reward_accuracy),
            "reward_margin_last": last.map(|s| s.reward_margin),
            "kl_per_token_last": last.map(|s| s.kl_per_token),
        },
        "before": before,
        "after": after,
        "eval_before": tasks_before,
        "eval_after": tasks_after,
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    let mut report = report;
    if let Some(sft) = sft_report {
        let table = chain_table(&sft, &report);
        let path = common.output.join(CHAIN_TABLE_FILE);
        dsllm_core::atomic::write_file(&path, table.as_bytes())?;
        outputs.push(WrittenFile { path, rows: 3, bytes: table.len() as u64 });
        report["chain_table"] = Value::String(table);
    }
    finish_report(DPO_TOOL, stage, counts, outputs, report, &common.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_table_takes_each_model_from_the_right_report() {
        let eval = |reversal: f64, answer: f64, logprob: f64| {
            json!({
                "digit_reversal": {"metrics": {"exact_match": reversal}, "items": 100},
                "preferred_answer": {"metrics": {"exact_match": answer}, "items": 100},
                "preferred_logprob": {"metrics": {"acc": logprob}, "items": 100},
            })
        };
        let sft = json!({"tool": SFT_TOOL, "eval_before": eval(0.0, 0.01, 0.3), "before": {"repetition_ratio": 0.9}});
        let dpo = json!({
            "eval_before": eval(0.6, 0.1, 0.4),
            "before": {"task": {"repetition_ratio": 0.05}},
            "eval_after": {"digit_reversal": {"metrics": {"exact_match": 0.7}, "items": 100}},
            "after": {"task": {"repetition_ratio": 0.0}},
        });
        let table = chain_table(&sft, &dpo);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].contains("task accuracy (digit_reversal), 100 items") && lines[0].ends_with("repetition ratio |"), "{}", lines[0]);
        assert_eq!(lines[2], "| base (pretrained) | 0.00 | 0.01 | 0.30 | 0.90 |");
        assert_eq!(lines[3], "| SFT | 0.60 | 0.10 | 0.40 | 0.05 |");
        // What the DPO run did not measure shows as "-".
        assert_eq!(lines[4], "| SFT + DPO | 0.70 | - | - | 0.00 |");
    }
}

//! Running one task: records → requests → the model's answers → metrics and per-item results.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dsllm_model::Backend;
use serde::Serialize;
use serde_json::{json, Value};

use crate::data::{gold_index, read_documents, read_records, string_field, string_list_field, Record};
use crate::lm::{Evaluator, LoglikelihoodRequest};
use crate::metrics::{answers_match, chance_interval, choice_predictions, extract_answer};
use crate::sandbox::{Outcome, Sandbox, SandboxLimits};
use crate::task::{render, AnswerExtraction, TaskKind, TaskSpec};

/// A task's results.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub name: String,
    pub kind: TaskKind,
    /// The metric the summary table shows (the paper's choice for the task).
    pub headline: String,
    pub items: usize,
    pub metrics: BTreeMap<String, f64>,
    /// Multiple choice: the mean chance accuracy and its 95% interval over these items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance: Option<Chance>,
    /// Why the task did not run (missing data file, no python3...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub seconds: f64,
    /// Per item: log-likelihoods, predictions, generations, sandbox outcomes.
    pub per_item: Vec<Value>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Chance {
    pub accuracy: f64,
    pub low: f64,
    pub high: f64,
}

impl TaskResult {
    fn skipped(spec: &TaskSpec, reason: String) -> Self {
        Self {
            name: spec.name.clone(),
            kind: spec.kind,
            headline: headline(spec),
            items: 0,
            metrics: BTreeMap::new(),
            chance: None,
            skipped: Some(reason),
            seconds: 0.0,
            per_item: Vec::new(),
        }
    }
}

/// The metric the paper reports for a task of this kind.
fn headline(spec: &TaskSpec) -> String {
    match spec.kind {
        TaskKind::MultipleChoice if spec.unconditional_context.is_some() => "acc_uncond",
        TaskKind::MultipleChoice if spec.contexts.is_some() => "acc",
        TaskKind::MultipleChoice => "acc_norm",
        TaskKind::Cloze => "acc",
        TaskKind::Generate => "exact_match",
        TaskKind::Code => "pass@1",
        TaskKind::BitsPerByte => "bits_per_byte",
    }
    .to_string()
}

/// Where [`run_task`] reads data and what it reports progress to.
pub struct RunContext<'a> {
    pub data_root: &'a Path,
    /// The tokenizer folder (bits per byte of ds-pack token shards needs its byte table).
    pub tokenizer_dir: &'a Path,
    /// Called with (items done, items in all).
    pub progress: &'a dyn Fn(usize, usize),
}

/// Runs `spec`; a missing data file gives a skipped result with the reason, not an error.
pub fn run_task<B: Backend>(evaluator: &mut Evaluator<B>, spec: &TaskSpec, ctx: &RunContext) -> Result<TaskResult> {
    let path = spec.data_path(ctx.data_root);
    if !path.exists() {
        return Ok(TaskResult::skipped(spec, format!("no data at {}", path.display())));
    }
    let started = Instant::now();
    let mut result = match spec.kind {
        TaskKind::BitsPerByte => bits_per_byte(evaluator, spec, &path, ctx)?,
        _ => {
            let mut records = read_records(&path)?;
            if let Some(limit) = spec.limit {
                records.truncate(limit);
            }
            if records.is_empty() {
                return Ok(TaskResult::skipped(spec, format!("{} holds no items", path.display())));
            }
            let run = match spec.kind {
                TaskKind::MultipleChoice => multiple_choice(evaluator, spec, &records, ctx),
                TaskKind::Cloze => cloze(evaluator, spec, &records, ctx),
                TaskKind::Generate => generate(evaluator, spec, &records, ctx),
                TaskKind::Code => code(evaluator, spec, &records, ctx),
                TaskKind::BitsPerByte => unreachable!(),
            };
            run.with_context(|| format!("task {} on {}", spec.name, path.display()))?
        }
    };
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

fn base(spec: &TaskSpec, items: usize) -> TaskResult {
    TaskResult {
        name: spec.name.clone(),
        kind: spec.kind,
        headline: headline(spec),
        items,
        metrics: BTreeMap::new(),
        chance: None,
        skipped: None,
        seconds: 0.0,
        per_item: Vec::with_capacity(items),
    }
}

/// A multiple-choice item: one context per choice (the same one, except WinoGrande's) and one
/// continuation per choice.
struct ChoiceItem {
    contexts: Vec<String>,
    continuations: Vec<String>,
    /// The choices' texts for acc_norm's length (without the target delimiter).
    texts: Vec<String>,
    gold: usize,
}

fn choice_item(spec: &TaskSpec, record: &Record) -> Result<ChoiceItem> {
    let delimiter = &spec.target_delimiter;
    if let Some(field) = &spec.contexts {
        let contexts = string_list_field(record, field)?;
        let continuation = string_field(record, spec.continuation.as_deref().unwrap_or_default())?;
        let gold = gold_index(record, spec.gold.as_deref().unwrap_or_default(), &[], contexts.len())?;
        let n = contexts.len();
        return Ok(ChoiceItem { contexts, continuations: vec![format!("{delimiter}{continuation}"); n], texts: vec![continuation.to_string(); n], gold });
    }
    let texts = match &spec.choices {
        Some(field) => string_list_field(record, field)?,
        None => spec.choice_labels.clone(),
    };
    if texts.len() < 2 {
        bail!("{} choices; multiple choice needs at least 2", texts.len());
    }
    let gold = gold_index(record, spec.gold.as_deref().unwrap_or_default(), &spec.choice_labels, texts.len())?;
    let context = render(spec.prompt.as_deref().unwrap_or_default(), record)?;
    Ok(ChoiceItem {
        contexts: vec![context; texts.len()],
        continuations: texts.iter().map(|t| format!("{delimiter}{t}")).collect(),
        texts,
        gold,
    })
}

/// The solved example of item `record` for few-shot prompts.
fn solved_example(spec: &TaskSpec, record: &Record) -> Result<String> {
    Ok(match spec.kind {
        TaskKind::MultipleChoice => {
            let item = choice_item(spec, record)?;
            format!("{}{}", item.contexts[item.gold], item.continuations[item.gold])
        }
        TaskKind::Cloze => format!(
            "{}{}{}",
            render(spec.prompt.as_deref().unwrap_or_default(), record)?,
            spec.target_delimiter,
            string_field(record, spec.continuation.as_deref().unwrap_or_default())?
        ),
        _ => format!(
            "{}{}",
            render(spec.prompt.as_deref().unwrap_or_default(), record)?,
            render(spec.few_shot_target.as_deref().unwrap_or_default(), record)?
        ),
    })
}

/// The description and `few_shot` solved examples (the items after item `i`, wrapping
/// around, never item `i` itself), each followed by the separator.
fn few_shot_prefix(spec: &TaskSpec, records: &[Record], i: usize) -> Result<String> {
    let mut prefix = spec.description.clone();
    let shots = spec.few_shot.min(records.len().saturating_sub(1));
    for k in 1..=shots {
        prefix.push_str(&solved_example(spec, &records[(i + k) % records.len()])?);
        prefix.push_str(&spec.few_shot_separator);
    }
    Ok(prefix)
}

/// Items per call to the model: bounds memory and gives progress.
const ITEMS_PER_CALL: usize = 64;

fn multiple_choice<B: Backend>(evaluator: &mut Evaluator<B>, spec: &TaskSpec, records: &[Record], ctx: &RunContext) -> Result<TaskResult> {
    let items = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut item = choice_item(spec, r).with_context(|| format!("item {}", i + 1))?;
            let prefix = few_shot_prefix(spec, records, i)?;
            for c in &mut item.contexts {
                *c = format!("{prefix}{c}");
            }
            Ok(item)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut result = base(spec, items.len());
    let (mut acc, mut acc_norm, mut acc_uncond, mut chance) = (0usize, 0usize, 0usize, 0.0f64);
    for (chunk_index, chunk) in items.chunks(ITEMS_PER_CALL).enumerate() {
        let mut requests = Vec::new();
        for item in chunk {
            for (context, continuation) in item.contexts.iter().zip(&item.continuations) {
                requests.push(LoglikelihoodRequest { context: context.clone(), continuation: continuation.clone() });
            }
            if let Some(unconditional) = &spec.unconditional_context {
                for continuation in &item.continuations {
                    requests.push(LoglikelihoodRequest { context: unconditional.clone(), continuation: continuation.clone() });
                }
            }
        }
        let answers = evaluator.loglikelihoods(&requests)?;
        let mut next = answers.iter();
        for (k, item) in chunk.iter().enumerate() {
            let conditional: Vec<_> = next.by_ref().take(item.texts.len()).copied().collect();
            let logprobs: Vec<f64> = conditional.iter().map(|a| a.logprob).collect();
            let unconditional: Option<Vec<f64>> =
                spec.unconditional_context.as_ref().map(|_| next.by_ref().take(item.texts.len()).map(|a| a.logprob).collect());
            let predictions = choice_predictions(&logprobs, &item.texts, unconditional.as_deref());
            acc += (predictions.acc == item.gold) as usize;
            acc_norm += (predictions.acc_norm == item.gold) as usize;
            acc_uncond += (predictions.acc_uncond == Some(item.gold)) as usize;
            chance += 1.0 / item.texts.len() as f64;
            let mut entry = json!({
                "index": chunk_index * ITEMS_PER_CALL + k,
                "gold": item.gold,
                "logprobs": logprobs,
                "continuation_tokens": conditional.iter().map(|a| a.tokens).collect::<Vec<_>>(),
                "pred_acc": predictions.acc,
                "pred_acc_norm": predictions.acc_norm,
            });
            if let (Some(u), Some(p)) = (unconditional, predictions.acc_uncond) {
                entry["logprobs_unconditional"] = json!(u);
                entry["pred_acc_uncond"] = json!(p);
            }
            result.per_item.push(entry);
        }
        (ctx.progress)((chunk_index * ITEMS_PER_CALL + chunk.len()).min(items.len()), items.len());
    }
    let n = items.len() as f64;
    result.metrics.insert("acc".into(), acc as f64 / n);
    result.metrics.insert("acc_norm".into(), acc_norm as f64 / n);
    if spec.unconditional_context.is_some() {
        result.metrics.insert("acc_uncond".into(), acc_uncond as f64 / n);
    }
    let p = chance / n;
    let (low, high) = chance_interval(p, items.len());
    result.chance = Some(Chance { accuracy: p, low, high });
    Ok(result)
}

fn cloze<B: Backend>(evaluator: &mut Evaluator<B>, spec: &TaskSpec, records: &[Record], ctx: &RunContext) -> Result<TaskResult> {
    let requests = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let context = format!("{}{}", few_shot_prefix(spec, records, i)?, render(spec.prompt.as_deref().unwrap_or_default(), r)?);
            let continuation = format!("{}{}", spec.target_delimiter, string_field(r, spec.continuation.as_deref().unwrap_or_default())?);
            Ok(LoglikelihoodRequest { context, continuation })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut result = base(spec, requests.len());
    let (mut greedy, mut total_logprob) = (0usize, 0.0f64);
    for (chunk_index, chunk) in requests.chunks(ITEMS_PER_CALL).enumerate() {
        for (k, answer) in evaluator.loglikelihoods(chunk)?.into_iter().enumerate() {
            greedy += answer.greedy as usize;
            total_logprob += answer.logprob;
            result.per_item.push(json!({"index": chunk_index * ITEMS_PER_CALL + k, "logprob": answer.logprob, "greedy": answer.greedy, "tokens": answer.tokens}));
        }
        (ctx.progress)(result.per_item.len(), requests.len());
    }
    let n = requests.len() as f64;
    result.metrics.insert("acc".into(), greedy as f64 / n);
    // lm-eval's LAMBADA perplexity: exp of the mean negative log-likelihood per item.
    result.metrics.insert("perplexity".into(), (-total_logprob / n).exp());
    Ok(result)
}

fn prompts(spec: &TaskSpec, records: &[Record]) -> Result<Vec<String>> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Ok(format!("{}{}", few_shot_prefix(spec, records, i)?, render(spec.prompt.as_deref().unwrap_or_default(), r)?)))
        .collect()
}

fn generate<B: Backend>(evaluator: &mut Evaluator<B>, spec: &TaskSpec, records: &[Record], ctx: &RunContext) -> Result<TaskResult> {
    let prompts = prompts(spec, records)?;
    let mut result = base(spec, records.len());
    let (mut strict_hits, mut flexible_hits) = (0usize, 0usize);
    let gold_field = spec.gold.as_deref().unwrap_or_default();
    for (chunk_index, chunk) in prompts.chunks(evaluator.generation_batch.max(1)).enumerate() {
        let generations = evaluator.generate(chunk, &spec.stop, spec.max_new_tokens)?;
        for (k, generation) in generations.into_iter().enumerate() {
            let index = chunk_index * evaluator.generation_batch.max(1) + k;
            let reference = string_field(&records[index], gold_field).map(str::to_string).or_else(|_| {
                records[index].get(gold_field).map(|v| v.to_string()).with_context(|| format!("item {}: no field {gold_field:?}", index + 1))
            })?;
            let gold = extract_answer(&reference, spec.answer, true).with_context(|| format!("item {}: no answer in the reference {reference:?}", index + 1))?;
            let strict = extract_answer(&generation, spec.answer, false);
            let flexible = extract_answer(&generation, spec.answer, true);
            let strict_ok = strict.as_deref().is_some_and(|p| answers_match(p, &gold));
            let flexible_ok = flexible.as_deref().is_some_and(|p| answers_match(p, &gold));
            strict_hits += strict_ok as usize;
            flexible_hits += flexible_ok as usize;
            result.per_item.push(json!({
                "index": index, "generation": generation, "gold": gold,
                "pred_strict": strict, "pred_flexible": flexible, "correct": strict_ok, "correct_flexible": flexible_ok,
            }));
        }
        (ctx.progress)(result.per_item.len(), prompts.len());
    }
    let n = records.len() as f64;
    result.metrics.insert("exact_match".into(), strict_hits as f64 / n);
    if spec.answer == AnswerExtraction::Gsm8k {
        result.metrics.insert("exact_match_flexible".into(), flexible_hits as f64 / n);
    }
    Ok(result)
}

fn code<B: Backend>(evaluator: &mut Evaluator<B>, spec: &TaskSpec, records: &[Record], ctx: &RunContext) -> Result<TaskResult> {
    let sandbox = match Sandbox::detect() {
        Ok(sandbox) => sandbox,
        Err(reason) => return Ok(TaskResult::skipped(spec, reason)),
    };
    let prompts = prompts(spec, records)?;
    let limits = SandboxLimits::new(spec.timeout_seconds, spec.memory_mib);
    let mut result = base(spec, records.len());
    let mut outcomes: BTreeMap<String, f64> = BTreeMap::new();
    let mut passed = 0usize;
    for (chunk_index, chunk) in prompts.chunks(evaluator.generation_batch.max(1)).enumerate() {
        let completions = evaluator.generate(chunk, &spec.stop, spec.max_new_tokens)?;
        for (k, completion) in completions.into_iter().enumerate() {
            let index = chunk_index * evaluator.generation_batch.max(1) + k;
            let test = render(spec.test_template.as_deref().unwrap_or_default(), &records[index])?;
            let program = format!("{}{completion}\n{test}", chunk[k]);
            let report = sandbox.run_python(&program, limits)?;
            passed += (report.outcome == Outcome::Passed) as usize;
            let name = serde_json::to_value(report.outcome)?.as_str().unwrap_or_default().to_string();
            *outcomes.entry(format!("outcome_{name}")).or_default() += 1.0;
            result.per_item.push(json!({"index": index, "completion": completion, "sandbox": report}));
        }
        (ctx.progress)(result.per_item.len(), prompts.len());
    }
    result.metrics.insert("pass@1".into(), passed as f64 / records.len() as f64);
    result.metrics.extend(outcomes);
    result.metrics.insert("network_isolated".into(), sandbox.network_isolated() as u8 as f64);
    Ok(result)
}

fn bits_per_byte<B: Backend>(evaluator: &mut Evaluator<B>, spec: &TaskSpec, path: &Path, ctx: &RunContext) -> Result<TaskResult> {
    let loss = if path.is_dir() {
        token_shards_loss(evaluator, spec, path, ctx)?
    } else {
        let mut documents = read_documents(path, &spec.text_field)?;
        if let Some(limit) = spec.limit {
            documents.truncate(limit);
        }
        let mut total = crate::lm::TextLoss::default();
        for (i, chunk) in documents.chunks(ITEMS_PER_CALL).enumerate() {
            let part = evaluator.text_loss(chunk)?;
            total.nats += part.nats;
            total.tokens += part.tokens;
            total.bytes += part.bytes;
            (ctx.progress)((i * ITEMS_PER_CALL + chunk.len()).min(documents.len()), documents.len());
        }
        (documents.len(), total)
    };
    let (items, loss) = loss;
    let mut result = base(spec, items);
    result.metrics.insert("bits_per_byte".into(), loss.bits_per_byte());
    result.metrics.insert("token_perplexity".into(), loss.token_perplexity());
    result.metrics.insert("tokens".into(), loss.tokens as f64);
    result.metrics.insert("bytes".into(), loss.bytes as f64);
    result.metrics.insert("nats".into(), loss.nats);
    Ok(result)
}

/// Held-out ds-pack sequences (`split` of the token folder): every token but each sequence's
/// first is predicted; bytes are what the tokenizer decodes those tokens to.
fn token_shards_loss<B: Backend>(evaluator: &mut Evaluator<B>, spec: &TaskSpec, dir: &Path, ctx: &RunContext) -> Result<(usize, crate::lm::TextLoss)> {
    let shards = dsllm_tokens::TokenShards::open(dir, &spec.split).with_context(|| format!("cannot open split {} of {}", spec.split, dir.display()))?;
    let tokenizer = dsllm_tokens::DsTokenizer::load(ctx.tokenizer_dir)
        .with_context(|| format!("bits per byte of token shards needs the ds-tokenizer folder they were packed with ({})", ctx.tokenizer_dir.display()))?;
    let bytes_per_token = dsllm_model::token_text_bytes(&tokenizer);
    let count = spec.limit.map_or(shards.sequence_count() as usize, |l| l.min(shards.sequence_count() as usize));
    let length = evaluator.model.config.max_position_embeddings;
    let mut total = crate::lm::TextLoss::default();
    let mut windows = Vec::new();
    for s in 0..count {
        let sequence = shards.sequence(s as u64);
        for &t in &sequence[1..] {
            total.bytes += bytes_per_token.get(t as usize).copied().unwrap_or(0) as u64;
        }
        total.tokens += sequence.len() as u64 - 1;
        for start in (0..sequence.len() - 1).step_by(length) {
            let end = (start + length).min(sequence.len() - 1);
            windows.push((sequence[start..end].to_vec(), sequence[start + 1..end + 1].to_vec()));
        }
        if windows.len() >= ITEMS_PER_CALL || s + 1 == count {
            total.nats += evaluator.windows_loss(&windows, length)?;
            windows.clear();
            (ctx.progress)(s + 1, count);
        }
    }
    Ok((count, total))
}

/// The 95% interval check the acceptance tests use: is `accuracy` within chance's interval?
pub fn within_chance(result: &TaskResult, metric: &str) -> Option<bool> {
    let chance = result.chance?;
    let value = *result.metrics.get(metric)?;
    Some(value >= chance.low && value <= chance.high)
}

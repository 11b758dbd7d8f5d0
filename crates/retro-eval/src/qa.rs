//! Zero-shot QA (issue 5; shared reference §5): for each question, the top contexts from the retrieval DB (the set's
//! own gold context first with `gold_context`), the reference's prompt for the set's [`QaTask`] (short span,
//! True/False, the dialogue as is, or a long answer), a greedy answer of at most `max_new` tokens (cut at the end of
//! text, and at the first newline for short and True/False answers), scored by SQuAD EM and F1, or for True/False by
//! accuracy.
//!
//! Encoder on: the Retro encoder gets the prompt's top-k contexts as the neighbours of every chunk (the reference's
//! `--reuse-top`); off: retrieval gated off, the plain decoder. Results are appended to `out` one JSON line per
//! question as each is answered; a rerun skips the questions already there, so an interrupted evaluation resumes.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use retro_data::chat::format_context;
use retro_data::ChatTemplate;
use retro_db::RetrievalDb;
use retro_model::{generate, generate_plain, GenerateOptions, Mode, SamplingOptions, TokenFlow};
use retro_serve::{prompt_contexts, Engine, LoadedModel};
use serde::{Deserialize, Serialize};

use crate::fixed_retriever::FixedRetriever;
use crate::qa_data::{read_qa, QaExample, QaTurn};
use crate::qa_run::QaRun;
use crate::qa_task::QaTask;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoder {
    /// The Retro encoder reads the prompt's top-k contexts.
    On,
    /// Gate 0: the decoder alone, the contexts only in the prompt.
    Off,
}

#[derive(Debug, Clone)]
pub struct QaOptions {
    /// The model and DB as given: recorded beside `out` ([`QaRun`]) so that a rerun resumes only the same evaluation.
    pub model: PathBuf,
    pub db: Option<PathBuf>,
    pub data: PathBuf,
    /// The prompt, stopping and scoring; None: inferred from the data file's name ([`QaTask::resolve`]).
    pub task: Option<QaTask>,
    /// Contexts from the DB per question (after the gold context, if any).
    pub contexts: usize,
    /// Put the example's own `context` first where it has one.
    pub gold_context: bool,
    pub encoder: Encoder,
    /// None: the model's own template (ChatML when its tokenizer has it), else the reference's.
    pub template: Option<ChatTemplate>,
    pub limit: Option<usize>,
    /// Generated tokens at most per answer (the reference stops after 64).
    pub max_new: usize,
    /// One JSON line per question; appended to, and read back to resume.
    pub out: Option<PathBuf>,
}

/// One answered question, as written to the output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaResult {
    /// Absent from the lines of older versions, which only had short-span prompts.
    #[serde(default)]
    pub task: QaTask,
    pub id: String,
    pub question: String,
    /// The dialogue's earlier turns (multi-turn sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<QaTurn>,
    pub contexts: Vec<String>,
    pub prediction: String,
    pub answers: Vec<String>,
    pub em: f64,
    pub f1: f64,
}

/// Mean EM and F1 (0..1) over `n` questions of `task` (for boolq both are the accuracy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QaSummary {
    pub task: QaTask,
    pub em: f64,
    pub f1: f64,
    pub n: usize,
}

/// Sums of the scores so far, so that the running summary costs O(1) per answer.
#[derive(Debug, Clone, Copy, Default)]
struct RunningSums {
    em: f64,
    f1: f64,
    n: usize,
}

impl RunningSums {
    fn add(&mut self, r: &QaResult) {
        self.em += r.em;
        self.f1 += r.f1;
        self.n += 1;
    }

    fn summary(&self, task: QaTask) -> QaSummary {
        let mean = |sum: f64| {
            if self.n == 0 {
                0.0
            } else {
                sum / self.n as f64
            }
        };
        QaSummary {
            task,
            em: mean(self.em),
            f1: mean(self.f1),
            n: self.n,
        }
    }
}

/// Receives each answer as it is scored: the result, the summary so far, questions done and in all.
pub type OnAnswer<'a> = dyn FnMut(&QaResult, &QaSummary, usize, usize) + 'a;

/// Evaluates `engine`'s model on `o.data`; `db` gives the contexts (needed when `o.contexts > 0`).
pub fn evaluate_qa(
    engine: &mut Engine,
    mut db: Option<&mut RetrievalDb>,
    o: &QaOptions,
    on_answer: &mut OnAnswer,
) -> Result<QaSummary> {
    if o.contexts > 0 && db.is_none() {
        bail!("--contexts {} needs --db (or use --contexts 0)", o.contexts);
    }
    if o.encoder == Encoder::On {
        match engine.model() {
            LoadedModel::Retro(_) => {}
            LoadedModel::Gpt(_) => {
                bail!("--encoder on needs a Retro model; a plain GPT has no encoder (use --encoder off)")
            }
        }
    }
    let task = QaTask::resolve(o.task, &o.data);
    let template = o.template.unwrap_or_else(|| engine.default_template());
    template.check_tokenizer(engine.tokenizer().inner())?;
    let examples = read_qa(&o.data, o.limit, task)?;
    let previous = match &o.out {
        Some(path) => read_results(path)?,
        None => Vec::new(),
    };
    if let (Some(path), Some((i, r))) = (
        &o.out,
        previous.iter().enumerate().find(|(_, r)| r.task != task),
    ) {
        bail!(
            "{}:{}: answered as task {}, and this run's task is {task}; use another --out",
            path.display(),
            i + 1,
            r.task
        );
    }
    if let Some(path) = &o.out {
        QaRun::new(
            &o.model,
            o.db.as_deref(),
            &o.data,
            task,
            o.contexts,
            o.gold_context,
            o.encoder,
            template,
            o.max_new,
        )
        .check_and_record(path, !previous.is_empty())?;
    }
    let ids: HashSet<&String> = examples.iter().map(|e| &e.id).collect();
    // Only the results of this run's questions count (the file may hold more, from a larger --limit).
    let mut sums = RunningSums::default();
    previous
        .iter()
        .filter(|r| ids.contains(&r.id))
        .for_each(|r| sums.add(r));
    let done: HashSet<String> = previous.into_iter().map(|r| r.id).collect();
    let mut out = match &o.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("{}: cannot open for appending", path.display()))?,
        ),
        None => None,
    };
    let stop = if task.stops_at_newline() {
        newline_stop_tokens(engine)
    } else {
        engine.stop_tokens().to_vec()
    };
    let total = examples.len();
    let mut answered = examples.iter().filter(|e| done.contains(&e.id)).count();
    for example in examples.iter().filter(|e| !done.contains(&e.id)) {
        let contexts = contexts_for(example, task, db.as_deref_mut(), o)?;
        let result = answer(engine, example, task, contexts, template, &stop, o)
            .with_context(|| format!("{}: question {}", o.data.display(), example.id))?;
        if let (Some(file), Some(path)) = (out.as_mut(), &o.out) {
            // One write per line, so a kill leaves at most one partial last line (dropped on resume).
            file.write_all(format!("{}\n", serde_json::to_string(&result)?).as_bytes())
                .with_context(|| format!("{}: cannot write", path.display()))?;
        }
        sums.add(&result);
        answered += 1;
        on_answer(&result, &sums.summary(task), answered, total);
    }
    Ok(sums.summary(task))
}

/// The results already in `path`; a last line cut short by an interrupted run is removed from the file.
pub fn read_results(path: &Path) -> Result<Vec<QaResult>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut results = Vec::new();
    let mut good_len = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match serde_json::from_str::<QaResult>(line.trim_end()) {
            Ok(r) if line.ends_with('\n') => {
                results.push(r);
                good_len += line.len();
            }
            _ if good_len + line.len() == text.len() => {
                // The last line, unfinished: drop it.
                let file = std::fs::OpenOptions::new().write(true).open(path)?;
                file.set_len(good_len as u64)?;
                break;
            }
            Err(e) => bail!(
                "{}:{}: not a QA result line ({e}); use another --out",
                path.display(),
                i + 1
            ),
            Ok(_) => unreachable!("only the last line can lack a newline"),
        }
    }
    Ok(results)
}

/// The prompt's contexts: the gold context first when asked for and present, then the DB's top hits, each its chunk
/// and continuation, formatted as the reference does (`title: …, source: …`).
fn contexts_for(
    example: &QaExample,
    task: QaTask,
    db: Option<&mut RetrievalDb>,
    o: &QaOptions,
) -> Result<Vec<String>> {
    let mut contexts = Vec::new();
    if o.gold_context {
        if let Some(c) = &example.context {
            contexts.push(format_context(example.title.as_deref(), c));
        }
    }
    if let Some(db) = db {
        contexts.extend(prompt_contexts(
            db,
            &task.search_query(example),
            o.contexts,
        )?);
    }
    Ok(contexts)
}

/// Generates and scores one answer. Contexts are dropped from the last (the least relevant) while the prompt and
/// the answer would not fit the model's context.
fn answer(
    engine: &Engine,
    example: &QaExample,
    task: QaTask,
    mut contexts: Vec<String>,
    template: ChatTemplate,
    stop: &[u32],
    o: &QaOptions,
) -> Result<QaResult> {
    let ctx = engine.context_len();
    let mut ids = engine.encode(&task.prompt(template, &contexts, example))?;
    while ids.len() + o.max_new > ctx && !contexts.is_empty() {
        contexts.pop();
        ids = engine.encode(&task.prompt(template, &contexts, example))?;
    }
    if ids.len() + o.max_new > ctx {
        bail!(
            "the prompt alone has {} tokens; with {} to generate it exceeds the model's context of {ctx}",
            ids.len(),
            o.max_new
        );
    }
    let opts = GenerateOptions {
        max_new: o.max_new,
        sampling: SamplingOptions::greedy(),
        stop: stop.to_vec(),
    };
    let mut ignore = |_: u32| Ok(TokenFlow::Continue(()));
    let tokens = match (engine.model(), o.encoder) {
        (LoadedModel::Gpt(gpt), _) => generate_plain(gpt, &ids, &opts, &mut ignore)?,
        (LoadedModel::Retro(retro), Encoder::Off) => {
            generate(retro, &ids, None, &opts, Mode::Cached, &mut ignore)?.tokens
        }
        (LoadedModel::Retro(retro), Encoder::On) => {
            let k = retro.config().num_neighbors;
            let texts: Vec<String> = contexts.iter().take(k).cloned().collect();
            let mut fixed = FixedRetriever {
                passages: texts
                    .iter()
                    .map(|t| engine.encode(t))
                    .collect::<Result<_>>()?,
                texts,
                pad: engine.tokenizer().pad_id,
            };
            generate(
                retro,
                &ids,
                Some(&mut fixed),
                &opts,
                Mode::Cached,
                &mut ignore,
            )?
            .tokens
        }
    };
    let text = engine.tokenizer().decode(&tokens)?;
    let prediction = task.answer_text(&text);
    let (em, f1) = task.score(&prediction, &example.answers);
    Ok(QaResult {
        task,
        id: example.id.clone(),
        question: example.question.clone(),
        history: example.history.clone(),
        contexts,
        prediction,
        answers: example.answers.clone(),
        em,
        f1,
    })
}

/// The engine's end-of-text tokens plus every token whose text holds a newline: a short answer ends at its line.
fn newline_stop_tokens(engine: &Engine) -> Vec<u32> {
    let tokenizer = engine.tokenizer().inner();
    let mut stop: Vec<u32> = engine.stop_tokens().to_vec();
    for id in 0..tokenizer.get_vocab_size(true) as u32 {
        if tokenizer
            .decode(&[id], false)
            .is_ok_and(|t| t.contains('\n'))
        {
            stop.push(id);
        }
    }
    stop.sort_unstable();
    stop.dedup();
    stop
}

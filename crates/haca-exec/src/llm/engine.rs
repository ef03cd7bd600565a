//! The generation engine: one thread owns the llama.cpp context and decodes every active
//! request together, one batch per step (each request a sequence of the batch), so concurrent
//! requests share the weights' memory traffic instead of fighting for the cores.
//!
//! A request waits in the job channel until a slot (a sequence id) is free. Each step adds the
//! next token of every decoding sequence, then fills the rest of the batch with prompt tokens
//! of sequences still prefilling, decodes once, and samples each sequence that asked for
//! logits. A request whose receiver is gone (its client left) is dropped at its next token and
//! its slot freed.

use super::json_prefix::JsonPrefix;
use super::{FinishReason, GenerateParams, Generation, LlmError};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Tokens sampled from when the temperature is above zero (then `top_p` cuts them).
const TOP_K: usize = 64;
/// A light penalty on tokens of the last `REPEAT_WINDOW` keeps a small base model out of loops.
const REPEAT_PENALTY: f32 = 1.15;
const REPEAT_WINDOW: usize = 64;

/// What the engine knows of the vocabulary, shared with every sequence.
pub(crate) struct VocabFacts {
    /// End-of-generation tokens (end of turn, end of text).
    pub end: Vec<u32>,
    /// Control tokens that are never sampled (everything control but the ends), by token id.
    pub suppressed: Vec<bool>,
    /// Each token's bytes as the model writes them (a byte token is one byte).
    pub bytes: Vec<Vec<u8>>,
    /// Each token's text (invalid UTF-8 as U+FFFD), for the JSON constraint.
    pub pieces: Vec<String>,
}

/// One generation handed to the engine.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// A GBNF grammar the answer must match (strict `json_schema`).
    pub grammar: Option<String>,
    pub events: mpsc::Sender<Event>,
}

/// What the engine tells the request that waits.
pub(crate) enum Event {
    /// The request has a slot (its requester may have left while it waited: then it is
    /// dropped here, unstarted).
    Started,
    Text {
        piece: String,
        tokens: usize,
    },
    Done(Result<Generation, LlmError>),
}

/// A place in the engine: decoding or queued. The requester holds it, so it is free again the
/// moment the requester stops waiting.
pub struct SlotPermit(Arc<AtomicUsize>);

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts the requests the engine holds (decoding and queued) against a bound.
#[derive(Clone)]
pub(crate) struct Admission {
    held: Arc<AtomicUsize>,
    pub capacity: usize,
}

impl Admission {
    pub fn new(capacity: usize) -> Admission {
        Admission {
            held: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }
    /// A permit, or `None` when the engine already holds `capacity` requests.
    pub fn try_take(&self) -> Option<SlotPermit> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| SlotPermit(self.held.clone()))
    }
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// A request being decoded.
struct Seq {
    id: i32,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    fed: usize,
    /// The sampled token to feed next.
    next: Option<u32>,
    generated: Vec<u32>,
    params: GenerateParams,
    budget: usize,
    rng: rand::rngs::StdRng,
    json: Option<JsonPrefix>,
    grammar: Option<LlamaSampler>,
    out: Stream,
    /// Bytes of a character split over tokens, waiting for the rest.
    utf8: Vec<u8>,
    events: mpsc::Sender<Event>,
    started: Instant,
    prefill: Option<Duration>,
    decode_started: Instant,
}

/// How a step left a sequence.
enum Step {
    Going,
    Finished(FinishReason),
}

/// Runs the engine until the job channel closes (the model was dropped).
pub(crate) fn run(
    mut ctx: LlamaContext<'_>,
    model: &llama_cpp_2::model::LlamaModel,
    facts: &VocabFacts,
    jobs: mpsc::Receiver<Job>,
    slots: usize,
    context: usize,
) {
    let n_batch = ctx.n_batch() as usize;
    let mut batch = LlamaBatch::new(n_batch, slots as i32);
    let mut active: Vec<Seq> = Vec::new();
    let mut free: Vec<i32> = (0..slots as i32).rev().collect();
    loop {
        // Admit waiting jobs into free slots; with nothing to do, wait for one.
        if active.is_empty() {
            // An idle cache starts over at its first cells: a sliding-window layer's cache is a
            // ring, and where a request's tokens land in it changes the order attention adds
            // them up in, so a greedy answer alone would not repeat in the last bits.
            ctx.clear_kv_cache();
            match jobs.recv() {
                Ok(job) => admit(job, &mut free, &mut active, model, context),
                Err(_) => return,
            }
        }
        while !free.is_empty() {
            match jobs.try_recv() {
                Ok(job) => admit(job, &mut free, &mut active, model, context),
                Err(_) => break,
            }
        }
        if active.is_empty() {
            continue;
        }
        // Decoding sequences first (one token each), then prompt chunks in what is left.
        batch.clear();
        let mut logit_rows: Vec<(usize, i32)> = Vec::new();
        for (n, s) in active.iter().enumerate() {
            if let Some(t) = s.next {
                let pos = (s.prompt.len() + s.generated.len() - 1) as i32;
                logit_rows.push((n, batch.n_tokens()));
                // The batch holds `slots` decoding tokens at least: n_batch >= slots.
                let _ = batch.add(LlamaToken(t as i32), pos, &[s.id], true);
            }
        }
        for (n, s) in active.iter_mut().enumerate() {
            if s.next.is_some() || s.fed >= s.prompt.len() {
                continue;
            }
            let room = n_batch - batch.n_tokens() as usize;
            let take = (s.prompt.len() - s.fed).min(room);
            for i in s.fed..s.fed + take {
                let last = i + 1 == s.prompt.len();
                if last {
                    logit_rows.push((n, batch.n_tokens()));
                }
                let _ = batch.add(LlamaToken(s.prompt[i] as i32), i as i32, &[s.id], last);
            }
            s.fed += take;
        }
        if batch.n_tokens() == 0 {
            continue;
        }
        if let Err(e) = ctx.decode(&mut batch) {
            // Nothing in this batch can go on: each sequence ends with the error.
            for s in active.drain(..) {
                free.push(s.id);
                let _ = ctx.clear_kv_cache_seq(Some(s.id as u32), None, None);
                let _ = s.events.send(Event::Done(Err(LlmError::Run(format!(
                    "llama.cpp decode: {e}"
                )))));
            }
            continue;
        }
        let mut finished: Vec<(usize, FinishReason)> = Vec::new();
        for (n, row) in logit_rows {
            let s = &mut active[n];
            let logits = ctx.get_logits_ith(row);
            if let Step::Finished(reason) = s.step(logits, facts, context) {
                finished.push((n, reason));
            }
        }
        // Highest index first, so the indices left stay valid.
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (n, reason) in finished {
            let s = active.swap_remove(n);
            free.push(s.id);
            let _ = ctx.clear_kv_cache_seq(Some(s.id as u32), None, None);
            s.finish(reason);
        }
    }
}

fn admit(
    job: Job,
    free: &mut Vec<i32>,
    active: &mut Vec<Seq>,
    model: &llama_cpp_2::model::LlamaModel,
    context: usize,
) {
    let Some(id) = free.pop() else {
        // Only called with a free slot.
        return;
    };
    if job.events.send(Event::Started).is_err() {
        free.push(id);
        return;
    }
    let grammar = match job.grammar.as_deref() {
        None => None,
        Some(g) => match LlamaSampler::grammar(model, g, "root") {
            Ok(s) => Some(s),
            Err(e) => {
                free.push(id);
                let _ = job.events.send(Event::Done(Err(LlmError::Request(format!(
                    "response_format.json_schema.schema: the grammar does not compile: {e}"
                )))));
                return;
            }
        },
    };
    let json = job.params.json.as_ref().map(|prefix| {
        let mut j = JsonPrefix::object();
        j.feed(prefix);
        j
    });
    let budget = job
        .params
        .max_tokens
        .min(context.saturating_sub(job.prompt.len()));
    let mut out = Stream::new(
        job.params.json.clone().unwrap_or_default(),
        job.params.stop.clone(),
    );
    let head = out.flush();
    if !head.is_empty()
        && job
            .events
            .send(Event::Text {
                piece: head,
                tokens: 0,
            })
            .is_err()
    {
        free.push(id);
        return;
    }
    active.push(Seq {
        id,
        rng: rand::rngs::StdRng::seed_from_u64(job.params.seed),
        prompt: job.prompt,
        fed: 0,
        next: None,
        generated: Vec::new(),
        params: job.params,
        budget,
        json,
        grammar,
        out,
        utf8: Vec::new(),
        events: job.events,
        started: Instant::now(),
        prefill: None,
        decode_started: Instant::now(),
    });
}

impl Seq {
    /// Samples after `logits`, releases the text that became final, and says whether the
    /// sequence goes on.
    fn step(&mut self, logits: &[f32], facts: &VocabFacts, context: usize) -> Step {
        if self.prefill.is_none() {
            self.prefill = Some(self.started.elapsed());
            self.decode_started = Instant::now();
        }
        if self.generated.len() >= self.budget {
            return Step::Finished(FinishReason::Length);
        }
        let window = &self.generated[self.generated.len().saturating_sub(REPEAT_WINDOW)..];
        let scores = Scores {
            logits,
            suppressed: &facts.suppressed,
            window,
        };
        // Not before `min_tokens`, and never with nothing said.
        let too_early = self.generated.len() < self.params.min_tokens
            || (self.generated.is_empty() && self.out.text.is_empty());
        let next = {
            let json = &self.json;
            let grammar = &mut self.grammar;
            pick(&scores, &self.params, &mut self.rng, &mut |id| {
                let is_end = facts.end.contains(&id);
                let fits = match json {
                    // A JSON answer ends only once the value is complete.
                    Some(j) => !is_end && j.accepts(&facts.pieces[id as usize]),
                    // A base model may end its turn at once.
                    None => !(is_end && too_early),
                };
                fits && grammar.as_mut().is_none_or(|g| grammar_allows(g, id))
            })
        };
        let Some(next) = next else {
            return Step::Finished(FinishReason::Stop);
        };
        if facts.end.contains(&next) {
            return Step::Finished(FinishReason::Stop);
        }
        self.generated.push(next);
        if let Some(g) = &mut self.grammar {
            g.accept(LlamaToken(next as i32));
        }
        let piece = &facts.pieces[next as usize];
        if let Some(j) = &mut self.json {
            j.feed(piece);
        }
        self.utf8.extend_from_slice(&facts.bytes[next as usize]);
        let text = take_utf8(&mut self.utf8);
        let complete = self.json.as_ref().is_some_and(JsonPrefix::is_complete);
        match self.out.push(&text, complete, !self.utf8.is_empty()) {
            Advance::More(piece) => {
                if !piece.is_empty() && !self.send(piece) {
                    return Step::Finished(FinishReason::Cancelled);
                }
            }
            Advance::Stopped(piece) => {
                if !piece.is_empty() {
                    self.send(piece);
                }
                return Step::Finished(FinishReason::Stop);
            }
        }
        if self.generated.len() >= self.budget
            || self.prompt.len() + self.generated.len() >= context
        {
            return Step::Finished(FinishReason::Length);
        }
        self.next = Some(next);
        Step::Going
    }

    fn send(&self, piece: String) -> bool {
        self.events
            .send(Event::Text {
                piece,
                tokens: self.generated.len(),
            })
            .is_ok()
    }

    fn finish(mut self, reason: FinishReason) {
        if reason != FinishReason::Cancelled {
            let rest = self.out.flush();
            if !rest.is_empty() {
                self.send(rest);
            }
        }
        let prefill = self.prefill.unwrap_or_else(|| self.started.elapsed());
        let g = Generation {
            text: std::mem::take(&mut self.out.text),
            prompt_tokens: self.prompt.len(),
            completion_tokens: self.generated.len(),
            finish_reason: reason,
            prefill,
            decode: self.decode_started.elapsed(),
        };
        let _ = self.events.send(Event::Done(Ok(g)));
    }
}

/// Takes the longest valid UTF-8 prefix of `buf` as text, leaving an unfinished character;
/// bytes that can never be UTF-8 become U+FFFD.
pub(crate) fn take_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&buf[..good]).expect("checked"));
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        buf.drain(..good + bad);
                    }
                    None => {
                        buf.drain(..good);
                        return out;
                    }
                }
            }
        }
    }
}

/// Whether the grammar lets `id` come next.
fn grammar_allows(g: &mut LlamaSampler, id: u32) -> bool {
    let mut one = LlamaTokenDataArray::new(
        vec![LlamaTokenData::new(LlamaToken(id as i32), 0.0, 0.0)],
        false,
    );
    g.apply(&mut one);
    one.data[0].logit().is_finite()
}

/// A sequence's scores for the next token: the model's logits, less the control tokens that
/// are never sampled (-inf) and a repetition penalty on the tokens of the recent window. Read
/// without copying the vocabulary-sized logits: only the head of the distribution is looked at.
pub(crate) struct Scores<'a> {
    pub logits: &'a [f32],
    pub suppressed: &'a [bool],
    /// Recent tokens, each occurrence penalized once.
    pub window: &'a [u32],
}

impl Scores<'_> {
    fn len(&self) -> usize {
        self.logits.len()
    }

    /// The penalized score of `id` (-inf when suppressed).
    fn of(&self, id: u32) -> f32 {
        if self.suppressed.get(id as usize).copied().unwrap_or(false) {
            return f32::NEG_INFINITY;
        }
        let mut s = self.logits[id as usize];
        for _ in self.window.iter().filter(|&&t| t == id) {
            s = if s >= 0.0 {
                s / REPEAT_PENALTY
            } else {
                s * REPEAT_PENALTY
            };
        }
        s
    }

    /// The `k` highest finite penalized scores, highest first (ties: lower id first).
    /// The penalty only lowers a score, so these are among the `k + window` highest logits
    /// that are not suppressed: only those are penalized and sorted.
    fn top(&self, k: usize) -> Vec<(u32, f32)> {
        let wide = top_k(self.logits, k + self.window.len(), self.suppressed);
        let mut top: Vec<(u32, f32)> = wide
            .into_iter()
            .map(|id| (id, self.of(id)))
            .filter(|(_, s)| s.is_finite())
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(k);
        top
    }

    /// Every finite penalized score, highest first: the fallback when nothing in the head fits.
    fn all(&self) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = (0..self.len() as u32)
            .map(|id| (id, self.of(id)))
            .filter(|(_, s)| s.is_finite())
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all
    }
}

/// The `k` highest finite scores' indices that `blocked` does not mark, highest first, in one
/// pass. Blocks whose maximum is under the k-th best so far are skipped whole, so once the
/// head is found the pass runs at the speed of reading memory.
fn top_k(scores: &[f32], k: usize, blocked: &[bool]) -> Vec<u32> {
    const BLOCK: usize = 64;
    let mut top: Vec<u32> = Vec::with_capacity(k + 1);
    if k == 0 {
        return top;
    }
    let mut floor = f32::NEG_INFINITY;
    for (b, block) in scores.chunks(BLOCK).enumerate() {
        // NaN never raises the maximum, so a block of NaN and -inf is skipped.
        let max = block
            .iter()
            .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m });
        if max <= floor {
            continue;
        }
        for (j, &s) in block.iter().enumerate() {
            let i = b * BLOCK + j;
            // Until k are held the floor is -inf, so only masked (-inf) and NaN scores are skipped.
            if s.partial_cmp(&floor) != Some(std::cmp::Ordering::Greater)
                || blocked.get(i).copied().unwrap_or(false)
            {
                continue;
            }
            let at = top.partition_point(|&t| scores[t as usize] >= s);
            top.insert(at, i as u32);
            if top.len() > k {
                top.pop();
            }
            if top.len() == k {
                floor = scores[top[k - 1] as usize];
            }
        }
    }
    top
}

/// Picks the next token among those `valid` allows: greedy at temperature 0, else sampled from
/// the top-k and top-p of the distribution, rejecting invalid draws.
pub(crate) fn pick(
    scores: &Scores<'_>,
    params: &GenerateParams,
    rng: &mut rand::rngs::StdRng,
    valid: &mut dyn FnMut(u32) -> bool,
) -> Option<u32> {
    let top = scores.top(TOP_K.min(scores.len()));
    if params.temperature > 0.0 && !top.is_empty() {
        let t = params.temperature as f32;
        let max = top[0].1;
        let mut w: Vec<f32> = top.iter().map(|(_, s)| ((s - max) / t).exp()).collect();
        let total: f32 = w.iter().sum();
        let mut acc = 0.0;
        let mut keep = w.len();
        for (n, x) in w.iter().enumerate() {
            acc += x / total;
            if acc as f64 >= params.top_p {
                keep = n + 1;
                break;
            }
        }
        w.truncate(keep);
        loop {
            let sum: f32 = w.iter().sum();
            if sum <= 0.0 {
                break;
            }
            let mut r = rng.gen::<f32>() * sum;
            let mut chosen = w.len() - 1;
            for (n, x) in w.iter().enumerate() {
                if r < *x {
                    chosen = n;
                    break;
                }
                r -= x;
            }
            if valid(top[chosen].0) {
                return Some(top[chosen].0);
            }
            w[chosen] = 0.0;
        }
    } else if let Some(&(id, _)) = top.iter().find(|(id, _)| valid(*id)) {
        return Some(id);
    }
    // Nothing in the head of the distribution fits: scan every token, most likely first.
    scores
        .all()
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| valid(*id))
}

/// Text released to the caller: everything generated so far, less what may still turn out to
/// be the start of a stop sequence.
pub(crate) struct Stream {
    /// A forced start of the answer (JSON), released before generation.
    head_len: usize,
    pub text: String,
    emitted: usize,
    stop: Vec<String>,
}

pub(crate) enum Advance {
    More(String),
    Stopped(String),
}

impl Stream {
    pub fn new(head: String, stop: Vec<String>) -> Self {
        Stream {
            head_len: head.len(),
            text: head,
            emitted: 0,
            stop,
        }
    }

    /// Appends `piece`; `complete` ends the answer (a finished JSON value); `split_char` says
    /// a character is still half-generated, so nothing after it may be final yet.
    pub fn push(&mut self, piece: &str, complete: bool, split_char: bool) -> Advance {
        let searched_from = self.text.len();
        self.text.push_str(piece);
        let found = self
            .stop
            .iter()
            .filter_map(|s| {
                let from = searched_from
                    .saturating_sub(s.len().saturating_sub(1))
                    .max(self.head_len);
                let from = floor_boundary(&self.text, from);
                self.text[from..].find(s.as_str()).map(|p| p + from)
            })
            .min();
        if let Some(at) = found {
            self.text.truncate(at.max(self.emitted));
            return Advance::Stopped(self.flush());
        }
        if complete && !split_char {
            return Advance::Stopped(self.flush());
        }
        let hold = self
            .stop
            .iter()
            .map(|s| s.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        let end =
            floor_boundary(&self.text, self.text.len().saturating_sub(hold)).max(self.emitted);
        Advance::More(self.take(end))
    }

    fn take(&mut self, end: usize) -> String {
        let piece = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        piece
    }

    pub fn flush(&mut self) -> String {
        self.take(self.text.len())
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str], stop: &[&str]) -> (Vec<String>, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut s = Stream::new(String::new(), stop);
        let mut out = Vec::new();
        for p in pieces {
            match s.push(p, false, false) {
                Advance::More(x) => out.push(x),
                Advance::Stopped(x) => {
                    out.push(x);
                    return (out, true);
                }
            }
        }
        out.push(s.flush());
        (out, false)
    }

    #[test]
    fn stop_sequences_are_held_back_and_cut() {
        let (out, stopped) = run(&["Hello", " wo", "rld", "\n\nUser", ":"], &["\n\nUser:"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello world");
        let (out, stopped) = run(&["a\n", "b"], &["\n\n"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "a\nb");
    }

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut buf = "caf".as_bytes().to_vec();
        buf.push(0xC3);
        assert_eq!(take_utf8(&mut buf), "caf");
        assert_eq!(buf, [0xC3]);
        buf.push(0xA9);
        assert_eq!(take_utf8(&mut buf), "é");
        assert!(buf.is_empty());
        // A byte that can never start a character is replaced, not held forever.
        let mut bad = vec![b'a', 0xFF, b'b'];
        assert_eq!(take_utf8(&mut bad), "a\u{FFFD}b");
    }

    proptest::proptest! {
        /// The head read from the logits in place is the head of the scores made the long
        /// way: copied, suppressed tokens masked, recent tokens penalized, then sorted.
        #[test]
        fn the_head_equals_the_head_of_the_penalized_copy(
            logits in proptest::collection::vec(-8i8..8, 1..300),
            suppressed in proptest::collection::vec(proptest::bool::weighted(0.1), 300),
            window in proptest::collection::vec(0u32..300, 0..40),
            k in 1usize..80,
        ) {
            let logits: Vec<f32> = logits.iter().map(|&x| x as f32 * 0.75).collect();
            let window: Vec<u32> = window.into_iter().filter(|&t| (t as usize) < logits.len()).collect();
            let suppressed = &suppressed[..logits.len()];
            let mut copy = logits.clone();
            for (i, s) in copy.iter_mut().enumerate() {
                if suppressed[i] {
                    *s = f32::NEG_INFINITY;
                }
            }
            for &t in &window {
                let s = &mut copy[t as usize];
                *s = if *s >= 0.0 { *s / REPEAT_PENALTY } else { *s * REPEAT_PENALTY };
            }
            let mut naive: Vec<(u32, f32)> = copy.iter().enumerate()
                .filter(|(_, s)| s.is_finite())
                .map(|(i, &s)| (i as u32, s))
                .collect();
            naive.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let scores = Scores { logits: &logits, suppressed, window: &window };
            naive.truncate(k);
            proptest::prop_assert_eq!(scores.top(k), naive);
        }
    }

    #[test]
    fn top_k_is_the_highest_scores_in_order_and_skips_masked_ones() {
        let scores = [0.5, f32::NEG_INFINITY, 3.0, -1.0, 2.0, 3.0, 0.0];
        assert_eq!(top_k(&scores, 3, &[]), vec![2, 5, 4]);
        assert_eq!(top_k(&[f32::NEG_INFINITY, 1.0], 5, &[]), vec![1]);
        assert_eq!(top_k(&scores, 2, &[false, false, true]), vec![5, 4]);
        let bare = |logits| Scores {
            logits,
            suppressed: &[],
            window: &[],
        };
        let scores = bare(&scores);
        let p = GenerateParams {
            max_tokens: 1,
            min_tokens: 0,
            temperature: 0.0,
            top_p: 1.0,
            seed: 1,
            stop: vec![],
            json: None,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // Greedy takes the best token the constraint allows, scanning past the top k.
        assert_eq!(pick(&scores, &p, &mut rng, &mut |i| i != 2), Some(5));
        assert_eq!(pick(&scores, &p, &mut rng, &mut |i| i == 3), Some(3));
        assert_eq!(pick(&scores, &p, &mut rng, &mut |_| false), None);
    }
}

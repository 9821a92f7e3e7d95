//! A generation request and its answer, as the scheduler sees them: options
//! validated, prompt tokenized; no HTTP and no model types.

/// How to generate: everything of a validated request but its prompt.
#[derive(Debug, Clone)]
pub struct GenerationOptions {
    pub max_new_tokens: usize,
    /// The end-of-text token is banned until this many tokens exist.
    pub min_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub repetition_penalty: f64,
    pub num_return_sequences: usize,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_at_sentence_end: bool,
}

/// A validated generation request, before tokenization.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: String,
    pub options: GenerationOptions,
}

/// A prompt as the model sees it.
#[derive(Debug, Clone)]
pub struct EncodedPrompt {
    pub ids: Vec<i64>,
    /// Testing only: the generation loop panics on this request.
    pub inject_fault: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Length,
    Eos,
    Stop,
    /// The request's deadline passed first.
    Deadline,
}

#[derive(Debug, Clone)]
pub struct GeneratedText {
    pub text: String,
    pub finish: Finish,
}

#[derive(Debug, Clone)]
pub struct GenerationOutput {
    pub completions: Vec<GeneratedText>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

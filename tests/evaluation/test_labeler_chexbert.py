"""The CheXbert backend with a tiny randomly initialised BERT of CheXbert's layout (no download)."""

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from asarg.evaluation.clinical_efficacy import compute_ce  # noqa: E402
from asarg.evaluation.report_labeler import CHEXPERT_LABELS, label_reports  # noqa: E402
from asarg.evaluation.report_labeler.chexbert import CHEXBERT_CONDITIONS, CLASS_TO_VALUE, build_chexbert  # noqa: E402

WORDS = "no pleural effusion mild cardiomegaly heart size is normal . , the lungs are clear small".split()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chexbert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    config.to_json_file(folder / "config.json")
    torch.manual_seed(0)
    model = build_chexbert(config)
    # Saved like the original: DataParallel's "module." prefix under "model_state_dict".
    torch.save(
        {"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, folder / "chexbert.pth"
    )
    return folder / "chexbert.pth", model, folder


def test_state_dict_has_chexbert_layout(checkpoint):
    path, _, _ = checkpoint
    keys = torch.load(path, weights_only=True)["model_state_dict"].keys()
    assert "module.bert.embeddings.word_embeddings.weight" in keys
    assert "module.linear_heads.12.weight" in keys and "module.linear_heads.13.weight" in keys
    state = torch.load(path, weights_only=True)["model_state_dict"]
    assert state["module.linear_heads.0.weight"].shape[0] == 4 and state["module.linear_heads.13.weight"].shape[0] == 2


def test_labels_equal_the_argmax_of_the_heads(checkpoint):
    path, model, folder = checkpoint
    reports = ["no pleural effusion .", "mild cardiomegaly , small pleural effusion ."]
    got = label_reports(reports, labeler="chexbert", chexbert_path=str(path))
    assert got.shape == (2, 14)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    enc = tok(reports, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        heads = model(enc["input_ids"], enc["attention_mask"])
    for i in range(2):
        for j, name in enumerate(CHEXBERT_CONDITIONS):
            want = CLASS_TO_VALUE[int(heads[j][i].argmax())]
            value = got[i, CHEXPERT_LABELS.index(name)]
            assert (math.isnan(want) and math.isnan(value)) or value == want


def test_metric_runs_with_chexbert_and_echoes_it(checkpoint):
    path, _, _ = checkpoint
    result = compute_ce(
        ["no pleural effusion ."], ["small pleural effusion ."], labeler="chexbert", chexbert_path=str(path)
    )
    assert "labeler=chexbert" in result["definition"]
    assert result["definition_args"]["chexbert_path"] == str(path)


def test_missing_checkpoint_and_path_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="needs `chexbert_path`"):
        label_reports(["x"], labeler="chexbert")
    with pytest.raises(ValueError, match="does not exist"):
        label_reports(["x"], labeler="chexbert", chexbert_path=str(tmp_path / "chexbert.pth"))


def test_missing_tokenizer_is_a_clear_error(checkpoint, tmp_path):
    path, _, _ = checkpoint
    lonely = tmp_path / "chexbert.pth"
    lonely.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="No tokenizer"):
        label_reports(["x"], labeler="chexbert", chexbert_path=str(lonely))

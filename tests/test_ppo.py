"""PPO (rlhfkit/ppo/trainer.py) and the RLOO / GRPO rows, on a toy task a 2-layer model learns in seconds.

The toy: a 64-word vocabulary ("t5".."t63", pad == eos == "<|im_end|>", like SmolLM2), a tiny Llama whose lm_head
is scaled x10 (so that LoRA can move the logits), and a reward = number of "t7" tokens in the response.
"""

import json
import os
import random
from types import SimpleNamespace

import pytest
import torch
from conftest import base_flags, launch_two_ranks, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import train_rlhf
from rlhfkit.errors import ConfigError
from rlhfkit.ppo import trainer as ppo_trainer
from rlhfkit.ppo.core import truncate_after_stop
from rlhfkit.ppo.trainer import PPOTrainer

WORDS = ["<|im_end|>", "<|im_start|>", "user", "assistant", "system"] + [f"t{i}" for i in range(5, 64)]
TARGET = WORDS.index("t7")
REWARD_FILE = f"""
def count_target(prompts, completions, completion_ids, **kwargs):
    return [float(sum(i == {TARGET} for i in ids)) for ids in completion_ids]
"""


def make_toy_model(path, seed=0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="t5"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        bos_token="<|im_start|>")
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
                         eos_token_id=0, bos_token_id=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def make_lora_reward_model(base_dir, path, seed=1):
    """A random LoRA reward model on the toy base, saved as reward_model.py saves one (adapter + score head)."""
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from common_args import ModelArgs
    from rlhfkit.model import lora_config

    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    model = get_peft_model(base, lora_config(ModelArgs(lora_r=4, lora_alpha=8), "SEQ_CLS"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "score" in name:
                param.normal_(std=0.5)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"))


def make_toy(folder):
    """The toy model, 64 prompts and the reward file under `folder`; returns their paths."""
    make_toy_model(str(folder / "model"))
    rng = random.Random(0)
    prompts = [{"prompt": " ".join(f"t{rng.randint(8, 63)}" for _ in range(rng.randint(2, 5)))} for _ in range(64)]
    write_jsonl(folder / "prompts.jsonl", prompts)
    (folder / "reward.py").write_text(REWARD_FILE)
    return {"model": str(folder / "model"), "prompts": str(folder / "prompts.jsonl"),
            "reward": f"{folder / 'reward.py'}:count_target", "folder": folder}


def toy_flags(toy, out, *extra):
    return base_flags(toy["model"], toy["prompts"], out, "--reward_model_path", "none", "--reward_function",
                      toy["reward"], "--eval_split_size", "0", "--warmup_steps", "0", "--lr_scheduler_type",
                      "constant", *extra)


PPO_TOY = ("--rlhf_type", "PPO", "--response_length", "8", "--per_device_train_batch_size", "8",
           "--num_mini_batches", "4", "--num_ppo_epochs", "1", "--logging_steps", "4")
LAYOUTS = {"separate-full": ("--train_mode", "full", "--learning_rate", "1e-3"),
           "separate-lora": ("--train_mode", "lora", "--learning_rate", "1e-2"),
           "adapters": ("--train_mode", "lora", "--model_mode", "adapters", "--learning_rate", "1e-2"),
           "shared": ("--train_mode", "lora", "--model_mode", "shared", "--learning_rate", "1e-2")}


def history(trainer, key):
    return [e[key] for e in trainer.state.log_history if key in e]


def build_trainer(toy, out, *flags):
    """What train_rlhf.main builds for PPO, without training."""
    return train_rlhf.build_trainer(toy_flags(toy, out, *PPO_TOY, *flags)).trainer


# ------------------------------------------------------------------------------------------------------------------
# Masks and score placement with pad == eos


def test_response_is_cut_after_its_first_eos_even_when_pad_is_eos():
    eos = pad = 0
    responses = torch.tensor([[5, eos, eos, eos], [5, 6, 7, 8], [eos, 9, 9, eos], [5, 6, 7, eos]])
    cut, mask, ended = truncate_after_stop(responses, [eos], pad)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert ended.tolist() == [True, False, True, True]
    assert cut[2].tolist() == [eos, pad, pad, pad]  # tokens after the first EOS become padding


def test_score_lands_on_the_last_real_token_of_a_rollout(toy, tmp_path, monkeypatch):
    """Real rollout path with pad == eos; generation is replaced by fixed responses so that EOS positions are known."""
    trainer = build_trainer(toy, tmp_path / "o", "--train_mode", "full", "--kl_coef", "0",
                            "--per_device_train_batch_size", "4", "--num_mini_batches", "1")
    fixed = torch.tensor([[9, 0, 0, 0, 0, 0, 0, 0], [9, 10, 11, 0, 0, 0, 0, 0], [9] * 8, [7, 7, 0, 7, 0, 0, 0, 0]])

    def generate(input_ids, attention_mask, generation_config):
        n = len(input_ids)
        return SimpleNamespace(sequences=torch.cat([input_ids, fixed[:n]], dim=1),
                               logits=tuple(torch.zeros(n, len(WORDS)) for _ in range(fixed.shape[1])))

    monkeypatch.setattr(trainer.model, "generate", generate)
    rollout = trainer._make_rollout(list(trainer.train_dataset)[:4])
    rewards, mask = rollout["rewards"], rollout["mask"]
    assert mask.sum(1).tolist() == [2, 4, 8, 3]  # the EOS itself is a real token
    expected_scores = [0.0, 0.0, 0.0, 2.0]  # number of t7 before the first EOS
    for row, (last, score) in enumerate(zip([1, 3, 7, 2], expected_scores)):
        assert rewards[row, last].item() == pytest.approx(score)
        assert torch.count_nonzero(rewards[row, :last]).item() == 0 and rewards[row, last + 1:].abs().sum() == 0
    assert rollout["advantages"][~mask].abs().sum() == 0


# ------------------------------------------------------------------------------------------------------------------
# First step of a rollout, generation config, adapters


@pytest.mark.parametrize("layout", ["separate-full", "adapters"])
def test_old_logprobs_from_the_sampling_pass_equal_a_fresh_forward(toy, tmp_path, layout):
    """The rollout's old log-probs come from generation's raw logits; a no-grad forward of the same tokens agrees."""
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS[layout], "--per_device_train_batch_size", "8",
                            "--num_mini_batches", "1", "--temperature", "0.7")
    rollout = trainer._make_rollout(list(trainer.train_dataset)[:8])
    with torch.no_grad(), trainer.accelerator.autocast():
        fresh = trainer._logprobs_and_values(trainer.model, rollout, part="policy")[0]
    mask = rollout["mask"]
    assert mask.sum() > 8 and (rollout["logprobs"] < 0)[mask].all()
    assert torch.allclose(rollout["logprobs"][mask], fresh[mask], atol=1e-4)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_first_step_of_each_rollout_has_ratio_one_and_kl_starts_at_zero(toy, tmp_path, layout):
    trainer = train_rlhf.main(toy_flags(toy, tmp_path / "o", *PPO_TOY, *LAYOUTS[layout], "--max_steps", "5",
                                        "--logging_steps", "1"))
    logs = [e for e in trainer.state.log_history if "val/ratio" in e]
    assert len(logs) == 5 and len(history(trainer, "objective/kl")) == 2  # 2 rollouts, logged at steps 1 and 5
    for first in (logs[0], logs[4]):  # first micro-batch of each rollout: old log-probs == new log-probs
        assert first["val/ratio"] == pytest.approx(1.0, abs=1e-5)
        assert first["policy/clipfrac_avg"] == 0 and first["policy/approxkl_avg"] < 1e-9
    kl = history(trainer, "objective/kl")
    assert abs(kl[0]) < 1e-5  # before any update policy == reference
    assert abs(kl[1]) > 1e-4  # after 4 updates they differ: the reference really is a separate, frozen model
    assert max(e["policy/approxkl_avg"] for e in logs[1:4]) > 0


def test_checkpoint_generation_config_does_not_leak_into_sampling(toy, tmp_path):
    clean = build_trainer(toy, tmp_path / "a", "--train_mode", "full")
    rows = list(clean.train_dataset)[:32]
    torch.manual_seed(3)
    reference = clean._generate(clean.model, rows)["responses"]
    top = torch.bincount(reference[reference != 0].flatten()).argmax().item()  # the most sampled word

    model = AutoModelForCausalLM.from_pretrained(toy["model"])
    model.generation_config.suppress_tokens = [top]
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.no_repeat_ngram_size = 1
    leaky = {**toy, "model": str(tmp_path / "leaky")}
    model.save_pretrained(leaky["model"])
    clean.processing_class.save_pretrained(leaky["model"])
    ppo = build_trainer(leaky, tmp_path / "b", "--train_mode", "full")
    torch.manual_seed(3)
    assert torch.equal(ppo._generate(ppo.model, rows)["responses"], reference)  # same samples, token `top` included
    prompt = ppo.processing_class(["<|im_start|> user t9 <|im_end|> <|im_start|> assistant"], return_tensors="pt")
    plain = model.generate(**prompt, do_sample=True, max_new_tokens=32, min_new_tokens=32)
    assert top not in plain[0, prompt["input_ids"].shape[1]:].tolist()  # the checkpoint's setting is in force there


def test_adapters_layout_one_base_both_adapters_and_value_head_get_gradients(toy, tmp_path):
    from rlhfkit.ppo.adapters import AdapterRewardModel
    from rlhfkit.reward import load_reward_model, reward_scorer

    rm = make_lora_reward_model(toy["model"], str(tmp_path / "rm"))
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS["adapters"], "--reward_model_path", rm,
                            "--kl_coef", "0.1")
    model = trainer.model
    assert isinstance(trainer.reward_model, AdapterRewardModel) and trainer.ref_model is None
    base = AutoModelForCausalLM.from_pretrained(toy["model"])
    base_weights = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and n != "value_head.weight")
    assert base_weights == sum(p.numel() for p in base.parameters())  # one copy of the base weights, plus adapters

    # The reward adapter scores exactly as the saved LoRA reward model does.
    prompts = [[{"role": "user", "content": "t9 t10"}], [{"role": "user", "content": "t11"}]]
    answers = ["t7 t7 t12", "t30"]
    saved, saved_tok = load_reward_model(rm, device="cpu")
    expected = reward_scorer(saved, saved_tok)(prompts, answers)
    assert trainer.rm_score(prompts, answers) == pytest.approx(expected, abs=1e-4)

    batch = trainer._prepare_inputs(list(trainer.train_dataset)[:32])
    trainer.compute_loss(model, batch).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for adapter in ("default", "value"):
        lora_b = [g for n, g in grads.items() if f"lora_B.{adapter}." in n]
        assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b), adapter
    assert grads["value_head.weight"].abs().sum() > 0
    frozen = [n for n, g in grads.items() if g is not None and not (".default." in n or ".value." in n
                                                                     or n == "value_head.weight")]
    assert frozen == []  # reward adapter and base weights get no gradient
    assert all(grads[n] is None for n in grads if ".reward." in n)


def gradients(trainer, batches):
    trainer.model.zero_grad()
    for batch in batches:
        trainer.compute_loss(trainer.model, batch).backward()
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", ["adapters", "shared"])
def test_activation_checkpointing_recomputes_each_adapter_with_itself(toy, tmp_path, layout):
    """Checkpointed layers are recomputed in backward; with two adapters on one base, the value pass must be
    recomputed with the value adapter although the policy adapter is active by then (shared: one pass, whose
    hidden states feed the value head).
    """
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS[layout])
    batch = trainer._prepare_inputs(list(trainer.train_dataset)[:32])
    trainer.model.train()
    plain = gradients(trainer, [batch])
    trainer.model.activation_checkpointing_enable()
    assert trainer.model.is_gradient_checkpointing
    checkpointed = gradients(trainer, [batch])
    assert plain.keys() == checkpointed.keys() and any(".value." in n or "value_head" in n for n in plain)
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6), name


def test_gradient_accumulation_does_not_change_the_mini_batch_gradient(toy, tmp_path):
    """Token-mean over the whole mini-batch: 1 micro-batch of 4 rows == 2 micro-batches of 2 (unequal lengths)."""
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS["separate-full"], "--kl_coef", "0.1")
    rollout = trainer._make_rollout(list(trainer.train_dataset)[:32])
    lengths = rollout["mask"].sum(1)
    short, long = torch.argsort(lengths)[:2], torch.argsort(lengths)[-2:]
    assert lengths[short].sum() < lengths[long].sum()
    rows = torch.cat([short, long])

    def part(r):
        return {**{k: (v[r] if torch.is_tensor(v) else v) for k, v in rollout.items()},
                "minibatch_tokens": lengths[rows].sum()}

    one = gradients(trainer, [part(rows)])
    two = gradients(trainer, [part(short), part(long)])
    for name, grad in one.items():
        assert torch.allclose(grad, two[name], atol=1e-6), name


def count_layer_calls(model):
    """A list that grows by one each time the first decoder layer of the policy's base runs forward; and its hook."""
    from rlhfkit.ppo.models import base_of

    calls = []
    layer = base_of(model.policy).model.layers[0]
    return calls, layer.register_forward_hook(lambda *_: calls.append(1))


def test_shared_layout_one_backbone_pass_and_both_losses_move_the_adapter(toy, tmp_path):
    from rlhfkit.ppo.adapters import AdapterRewardModel
    from rlhfkit.ppo.core import ppo_policy_loss, ppo_value_loss
    from rlhfkit.reward import load_reward_model, reward_scorer

    rm = make_lora_reward_model(toy["model"], str(tmp_path / "rm"))
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS["shared"], "--reward_model_path", rm, "--kl_coef", "0.1")
    model = trainer.model
    assert model.layout == "shared" and model.value_model is None and isinstance(trainer.reward_model,
                                                                                 AdapterRewardModel)
    assert not any(".value." in n for n, _ in model.named_parameters())  # no value adapter: one trained adapter
    prompts, answers = [[{"role": "user", "content": "t9 t10"}]], ["t7 t7 t12"]
    saved, saved_tok = load_reward_model(rm, device="cpu")
    assert trainer.rm_score(prompts, answers) == pytest.approx(reward_scorer(saved, saved_tok)(prompts, answers),
                                                               abs=1e-4)

    batch = trainer._prepare_inputs(list(trainer.train_dataset)[:32])
    calls, hook = count_layer_calls(model)
    logprobs, values, _ = trainer._logprobs_and_values(model, batch)  # a training forward, with grad
    hook.remove()
    assert len(calls) == 1 and values.shape == logprobs.shape  # logits and values from ONE backbone pass

    def adapter_grads(loss):
        model.zero_grad()
        loss.backward(retain_graph=True)
        return [p.grad for n, p in model.named_parameters() if "lora_B.default." in n]

    mask = batch["mask"]
    pg_loss, _ = ppo_policy_loss(logprobs, batch["logprobs"], batch["advantages"], mask, 0.2)
    vf_loss, _ = ppo_value_loss(values, batch["values"], batch["returns"], mask, 0.2)
    for grads in (adapter_grads(pg_loss), adapter_grads(vf_loss)):  # each loss alone moves the policy adapter
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.value_head.weight.grad.abs().sum() > 0


def test_rollout_forward_passes_per_layout(toy, tmp_path):
    """Backbone passes of one no-grad rollout forward (policy + values) and of one training forward."""
    passes = {}
    for layout in ("adapters", "shared"):
        trainer = build_trainer(toy, tmp_path / layout, *LAYOUTS[layout], "--per_device_train_batch_size", "2",
                                "--num_mini_batches", "1")
        batch = trainer._prepare_inputs(list(trainer.train_dataset)[:2])
        calls, hook = count_layer_calls(trainer.model)
        with torch.no_grad():
            trainer._logprobs_and_values(trainer.model, batch)
        hook.remove()
        passes[layout] = len(calls)
    assert passes == {"adapters": 2, "shared": 1}


@pytest.mark.parametrize("layout", ["separate-lora", "adapters"])
def test_value_first_backward_gives_the_joint_loss_gradient(toy, tmp_path, layout):
    """Value forward + backward, then the policy's: the summed gradient equals the joint loss's backward."""
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS[layout], "--kl_coef", "0.1")
    batch = trainer._prepare_inputs(list(trainer.train_dataset)[:32])
    assert trainer.split_value_backward
    calls, hook = count_layer_calls(trainer.model)
    split = gradients(trainer, [batch])
    logged = trainer._value_loss_part
    hook.remove()
    trainer.split_value_backward = False
    joint = gradients(trainer, [batch])
    assert split.keys() == joint.keys() and any("value" in n for n in split)
    for name, grad in joint.items():
        assert torch.allclose(grad, split[name], atol=1e-6), name
    assert logged is not None and logged > 0  # the value phase's loss, added back to the logged loss
    assert len(calls) == (2 if layout == "adapters" else 1)  # separate: the value model has its own layers


def write_ptx_rows(path):
    rows = [{"messages": [{"role": "user", "content": "t9 t10"}, {"role": "assistant", "content": "t7 t8"}]},
            {"prompt": [{"role": "user", "content": "t11"}], "completion": [{"role": "assistant", "content": "t12"}]}]
    return write_jsonl(path, rows)


def test_ptx_term_is_ptx_coef_times_the_sft_loss_on_its_batch(toy, tmp_path, monkeypatch):
    """PPO-ptx: the term added to the PPO loss equals ptx_coef x the NLL of the assistant tokens, by hand."""
    from rlhfkit.ppo.ptx import ptx_loss

    w = {word: i for i, word in enumerate(WORDS)}
    ptx = write_ptx_rows(tmp_path / "sft.jsonl")
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS["separate-full"], "--ptx_data_path", ptx,
                            "--ptx_coef", "0.5", "--per_device_train_batch_size", "2", "--num_mini_batches", "1")
    # Chat template: "<|im_start|> user CONTENT <|im_end|> <|im_start|> assistant CONTENT <|im_end|> "
    row1 = [1, 2, w["t9"], w["t10"], 0, 1, 3, w["t7"], w["t8"], 0]  # trained: t7 t8 <|im_end|> (positions 7-9)
    row2 = [1, 2, w["t11"], 0, 1, 3, w["t12"], 0]  # trained: t12 <|im_end|> (positions 6-7)
    assert sorted(r["input_ids"] for r in trainer.ptx.rows) == sorted([row1, row2])
    policy = trainer.model.policy
    with torch.no_grad():
        nll = []
        for ids, first in ((row1, 7), (row2, 6)):
            logp = torch.log_softmax(policy(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            nll += [-logp[t - 1, ids[t]].item() for t in range(first, len(ids))]
        expected = 0.5 * sum(nll) / len(nll)  # token mean over the 5 assistant tokens of the batch
        batch = trainer.ptx.next_batch("cpu")
        assert 0.5 * ptx_loss(trainer.model, batch).item() == pytest.approx(expected, rel=1e-5)
        rollout = trainer._prepare_inputs(list(trainer.train_dataset)[:2])
        monkeypatch.setattr(trainer.ptx, "next_batch", lambda device: batch)
        with_ptx = trainer.compute_loss(trainer.model, rollout).item()
        trainer.ptx = None
        without = trainer.compute_loss(trainer.model, rollout).item()
    assert with_ptx - without == pytest.approx(expected, rel=1e-4)  # gradient_accumulation_steps 1


def test_bad_ptx_rows_stop_the_run_before_any_weights_load(toy, tmp_path, monkeypatch):
    from rlhfkit.data.reader import DataFormatError

    bad = write_jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "t9"}]}])
    monkeypatch.setattr("rlhfkit.ppo.run.load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    with pytest.raises(DataFormatError, match=r"sft.jsonl:1: .*assistant"):
        build_trainer(toy, tmp_path / "o", "--ptx_data_path", bad)


@pytest.mark.parametrize("layout", ["separate-lora", "shared"])
def test_value_learning_rate_and_weight_decay_are_param_groups_of_the_one_optimizer(toy, tmp_path, layout):
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS[layout], "--value_learning_rate", "3e-4",
                            "--value_weight_decay", "0.05", "--weight_decay", "0.01")
    model = trainer.model
    value = set(model.value_parameter_names())
    assert value == ({"value_head.weight"} if layout == "shared" else value) and value
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = trainer.create_optimizer()
    seen = set()
    for group in optimizer.param_groups:
        kinds = {names[id(p)] in value for p in group["params"]}
        assert len(kinds) == 1  # a group holds policy or value parameters, never both
        is_value = kinds.pop()
        assert group["lr"] == pytest.approx(3e-4 if is_value else 1e-2)
        if group["weight_decay"]:
            assert group["weight_decay"] == pytest.approx(0.05 if is_value else 0.01)
        seen.update(names[id(p)] for p in group["params"])
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(g["weight_decay"] == pytest.approx(0.05) for g in optimizer.param_groups)


ECHO_REWARD = """
def echo_check(prompts, completions, completion_ids, **kwargs):
    # 1 if the response repeats its prompt's last word (what the patched generate writes), else -100
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if t.strip() == p[-1]["content"].split()[-1] else -100.0 for p, t in zip(prompts, texts)]
"""


def test_num_samples_per_prompt_keeps_prompts_and_responses_aligned(toy, tmp_path, monkeypatch):
    (tmp_path / "echo.py").write_text(ECHO_REWARD)
    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS["separate-full"], "--num_samples_per_prompt", "4",
                            "--reward_function", f"{tmp_path / 'echo.py'}:echo_check", "--kl_coef", "0")

    def generate(input_ids, attention_mask, generation_config):  # the response echoes the prompt's last word
        return SimpleNamespace(sequences=torch.cat([input_ids, input_ids[:, -4:-3], torch.zeros_like(input_ids[:, :2])],
                                                   dim=1), logits=tuple(torch.zeros(len(input_ids), len(WORDS))
                                                                        for _ in range(3)))

    monkeypatch.setattr(trainer.model, "generate", generate)
    rows = next(iter(trainer.get_train_dataloader()))
    assert len(rows) == 32 and len({str(r["prompt"]) for r in rows}) == 8  # 8 prompts x 4 responses
    assert all(rows[i]["prompt"] == rows[i - i % 4]["prompt"] for i in range(32))
    rollout = trainer._make_rollout(rows)
    assert rollout["rewards"].sum(1).tolist() == [1.0] * 32  # each response was scored with its own prompt
    width = rollout["prompt_width"]
    for micro in trainer._split(rollout):  # shuffled mini-batches keep each row's prompt with its response
        assert torch.equal(micro["responses"][:, 0], micro["input_ids"][:, width - 4])
    with pytest.raises(ConfigError, match="num_samples_per_prompt 3 must divide"):
        build_trainer(toy, tmp_path / "p", "--num_samples_per_prompt", "3")


# ------------------------------------------------------------------------------------------------------------------
# Step accounting, learning, saving, resuming


def test_one_rollout_gives_num_mini_batches_x_num_ppo_epochs_optimizer_steps(toy, tmp_path, monkeypatch):
    rollouts, micro_steps = [], []
    make, step = PPOTrainer._make_rollout, PPOTrainer.training_step
    monkeypatch.setattr(PPOTrainer, "_make_rollout", lambda self, rows: rollouts.append(len(rows)) or make(self, rows))
    monkeypatch.setattr(PPOTrainer, "training_step",
                        lambda self, *a, **k: micro_steps.append(1) or step(self, *a, **k))
    trainer = train_rlhf.main(toy_flags(toy, tmp_path / "o", *PPO_TOY, "--per_device_train_batch_size", "2",
                                        "--gradient_accumulation_steps", "2", "--num_mini_batches", "2",
                                        "--num_ppo_epochs", "2", "--max_steps", "8", "--train_mode", "full"))
    assert rollouts == [8, 8]  # b * g * M prompts per rollout
    assert trainer.state.global_step == 8 and len(micro_steps) == 16  # M * E = 4 optimizer steps per rollout


@pytest.fixture(scope="module")
def toy_runs(toy, tmp_path_factory):
    """Learning runs on the toy reward: PPO 10 rollouts of 32 prompts (40 optimizer steps) in each layout and with
    REINFORCE++ (no critic); RLOO/GRPO 21 steps.
    """
    runs = {}
    for layout in ("separate-lora", "adapters", "shared"):
        out = tmp_path_factory.mktemp("ppo") / "out"
        runs[layout] = train_rlhf.main(toy_flags(toy, out, *PPO_TOY, *LAYOUTS[layout], "--max_steps", "40",
                                                 "--save_value_model", "true")), out
    out = tmp_path_factory.mktemp("reinforce_pp") / "out"
    runs["reinforce_pp"] = train_rlhf.main(toy_flags(toy, out, *PPO_TOY, *LAYOUTS["separate-lora"], "--max_steps",
                                                     "40", "--advantage_estimator", "reinforce_pp")), out
    for method in ("RLOO", "GRPO"):
        out = tmp_path_factory.mktemp(method) / "out"
        runs[method] = train_rlhf.main(toy_flags(
            toy, out, "--rlhf_type", method, "--train_mode", "lora", "--learning_rate", "1e-2",
            "--max_completion_length", "8", "--per_device_train_batch_size", "16", "--num_generations", "4",
            "--max_steps", "21", "--logging_steps", "3")), out
    return runs


@pytest.mark.parametrize("run", ["separate-lora", "adapters", "shared", "reinforce_pp", "RLOO", "GRPO"])
def test_toy_reward_rises(toy_runs, run):
    trainer, out = toy_runs[run]
    scores = history(trainer, "reward" if run in ("RLOO", "GRPO") else "objective/scores")
    assert len(scores) == (7 if run in ("RLOO", "GRPO") else 10)
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 2.0, scores  # of at most 8 "t7" per response
    assert open(out / "online_curves.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("layout", ["separate-lora", "adapters", "shared"])
def test_saved_policy_reloads_to_identical_logits(toy_runs, layout):
    from peft import AutoPeftModelForCausalLM

    trainer, out = toy_runs[layout]
    probe = torch.tensor([[1, 2, 9, 10, 0, 1, 3]])
    policy = trainer.model.policy
    policy.set_adapter("default") if layout != "separate-lora" else None
    with torch.no_grad():
        expected = policy(input_ids=probe).logits
        reloaded = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()
        assert torch.allclose(reloaded(input_ids=probe).logits, expected, atol=1e-5)
    keys = load_file(str(out / "adapter_model.safetensors")).keys()
    assert keys and not any("value" in k or "score" in k or "reward" in k for k in keys)  # the policy only
    value_files = os.listdir(out / "value")
    if layout == "shared":  # the value head alone: it reads the policy's last hidden state
        assert value_files == ["value_head.safetensors"]
        head = load_file(str(out / "value" / "value_head.safetensors"))["weight"]
        assert torch.equal(head, trainer.model.value_head.weight.detach())
        return
    assert "adapter_model.safetensors" in value_files
    assert ("value_head.safetensors" in value_files) == (layout == "adapters")


def test_reinforce_pp_trains_no_value_model(toy_runs):
    trainer, out = toy_runs["reinforce_pp"]
    model = trainer.model
    assert not model.has_value and model.value_model is None and model.value_head is None
    assert not any(n.startswith("value") for n, _ in model.named_parameters())
    logged = {k for e in trainer.state.log_history for k in e}
    assert "loss/policy_avg" in logged and not {"loss/value_avg", "val/values_mean"} & logged
    assert not os.path.exists(out / "value")


def test_full_fine_tuning_saves_a_model_that_reloads(toy, tmp_path):
    out = tmp_path / "full"
    trainer = train_rlhf.main(toy_flags(toy, out, *PPO_TOY, *LAYOUTS["separate-full"], "--max_steps", "4"))
    probe = torch.tensor([[1, 2, 9, 10, 0, 1, 3]])
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=probe).logits, trainer.model.policy(input_ids=probe).logits,
                              atol=1e-5)
    assert os.path.isfile(out / "model.safetensors") and not os.path.exists(out / "value")


def test_resume_after_interruption_continues_the_step_count(toy, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    flags = toy_flags(toy, out, *PPO_TOY, *LAYOUTS["separate-lora"], "--save_strategy", "steps", "--save_steps",
                      "4", "--logging_steps", "1", "--kl_target", "1.0")
    first = train_rlhf.main(flags + ["--max_steps", "4"])  # stands for a run killed after checkpoint-4
    saved = load_file(str(out / "checkpoint-4" / ppo_trainer.TRAINABLE_FILE))
    assert any(k.startswith("value_model.") for k in saved) and any(k.startswith("policy.") for k in saved)
    loaded, steps_run = {}, []
    load, step = PPOTrainer._load_from_checkpoint, PPOTrainer.training_step

    def spy_load(self, path, model=None):
        load(self, path, model)
        loaded.update({k: v.detach().clone() for k, v in self.model.state_dict().items() if k in saved})

    monkeypatch.setattr(PPOTrainer, "_load_from_checkpoint", spy_load)
    monkeypatch.setattr(PPOTrainer, "training_step", lambda self, *a, **k: steps_run.append(1) or step(self, *a, **k))
    trainer = train_rlhf.main(flags + ["--max_steps", "8", "--resume_from_checkpoint", "true"])
    assert trainer.state.global_step == 8 and len(steps_run) == 4  # steps 1-4 came from the checkpoint
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == list(range(1, 9))
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())  # policy and value weights restored
    kl_coefs = history(trainer, "objective/kl_coef")
    assert kl_coefs[1] == pytest.approx(first.kl_ctl.value)  # the adaptive KL coefficient went on from there


# ------------------------------------------------------------------------------------------------------------------
# The command of the issue, with a reward model from reward_model.py's format; data and argument errors


@pytest.fixture(scope="module")
def tiny_rm(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(tmp_path_factory.mktemp("rm") / "rm")
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_ppo_two_steps_with_a_full_reward_model_on_the_tiny_model(tiny_model_dir, tiny_rm, easy_data, tmp_path):
    """The issue's command: a reward model in reward_model.py's format, the demo tokenizer and chat template."""
    out = tmp_path / "ppo"
    trainer = train_rlhf.main(["--rlhf_type", "PPO", "--model_name_or_path", tiny_model_dir, "--reward_model_path",
                               tiny_rm, "--train_data_path", easy_data[0], "--output_dir", str(out), "--max_steps",
                               "2", "--report_to", "none", "--disable_tqdm", "true", "--response_length", "16"])
    assert trainer.state.global_step == 2
    scores = history(trainer, "objective/scores/reward_model") + history(trainer, "eval_objective/scores")
    assert len(scores) == 3 and all(abs(s) < 1e3 for s in scores)  # one rollout, eval before and after
    assert os.path.isfile(out / "adapter_model.safetensors") and os.path.isfile(out / "online_curves.png")
    assert json.load(open(out / "run_config.json"))["training"]["reward_model_path"] == tiny_rm


def test_reward_model_with_another_tokenizer_scores_the_decoded_text(toy, tiny_rm, tmp_path):
    """Toy policy (64-word vocabulary) + a reward model with the 49k-token demo tokenizer: answers are decoded and
    re-tokenised for the reward model, and the value model starts from the policy checkpoint instead.
    """
    from rlhfkit.reward import load_reward_model, reward_scorer

    trainer = build_trainer(toy, tmp_path / "o", *LAYOUTS["separate-lora"], "--reward_model_path", tiny_rm,
                            "--reward_function", "none", "--per_device_train_batch_size", "4")
    assert trainer.model.value_model.config.vocab_size == len(WORDS)
    rollout_rows = list(trainer.train_dataset)[:4]
    generated = trainer._generate(trainer.model, rollout_rows)
    rm, rm_tokenizer = load_reward_model(tiny_rm, device="cpu")
    expected = reward_scorer(rm, rm_tokenizer)([r["prompt"] for r in rollout_rows], generated["texts"])
    assert generated["scores"]["reward_model"].tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("method", ["PPO", "RLOO", "GRPO"])
def test_two_steps_with_a_lora_reward_model(method, toy, tmp_path):
    rm = make_lora_reward_model(toy["model"], str(tmp_path / "rm"))
    out = tmp_path / method
    length = ["--response_length", "8"] if method == "PPO" else ["--max_completion_length", "8"]
    trainer = train_rlhf.main(toy_flags(toy, out, "--rlhf_type", method, "--reward_model_path", rm,
                                        "--reward_function", "none" if method == "PPO" else toy["reward"],
                                        "--max_steps", "2", *length))
    assert trainer.state.global_step == 2
    if method == "PPO":  # value model = the reward adapter, trained further (critic initialised from the RM)
        assert trainer.model.value_model.peft_config["default"].task_type == "SEQ_CLS"
        assert history(trainer, "objective/scores/reward_model")
    else:  # TRL got the merged reward model and the function
        logged = {k for e in trainer.state.log_history for k in e}
        assert {"rewards/rm/mean", "rewards/count_target/mean"} <= logged, logged
    assert os.path.isfile(out / "adapter_model.safetensors") and os.path.isfile(out / "online_curves.png")


def test_prompt_data_reads_prompt_only_and_preference_files_and_names_bad_lines(tmp_path, tiny_model_dir):
    from common_args import CommonArgs
    from rlhfkit.data.prompts import prompt_data
    from rlhfkit.data.reader import DataFormatError
    from rlhfkit.model import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    config = type("C", (), {"seed": 0, "max_prompt_length": 8})()
    rows = [{"prompt": "Hi there, how are you today my friend?"},
            {"prompt": [{"role": "user", "content": "Name a colour."}]},
            {"prompt": "Q?", "chosen": "A", "rejected": "B"}]
    args = CommonArgs(train_data_path=write_jsonl(tmp_path / "p.jsonl", rows), eval_split_size=0)
    logs = []
    train, held_out = prompt_data(args, config, tokenizer, "kept last tokens", log=logs.append)
    assert [r["prompt"][-1]["content"] for r in train] == ["Hi there, how are you today my friend?", "Name a colour.",
                                                           "Q?"] and held_out == []
    assert any("longer than max_prompt_length=8" in m and "kept last tokens" in m for m in logs)
    bad = CommonArgs(train_data_path=write_jsonl(tmp_path / "b.jsonl", [rows[0], {"question": "x"},
                                                                       {"prompt": ""}]), eval_split_size=0)
    with pytest.raises(DataFormatError, match=r"b.jsonl:2: field 'prompt': missing field") as error:
        prompt_data(bad, config, tokenizer, "")
    assert "b.jsonl:3: field 'prompt': empty prompt" in str(error.value)


def test_settings_errors_name_the_fix(toy, tmp_path):
    from rlhf_args.ppo_config import PPOConfig
    from rlhfkit.reward import load_reward_function

    with pytest.raises(ValueError, match="--reward_model_path"):
        PPOConfig(output_dir="x", reward_model_path=None)
    with pytest.raises(ConfigError, match="model_mode must be one of separate, adapters, shared"):
        PPOConfig(output_dir="x", model_mode="joint")
    with pytest.raises(ConfigError, match="advantage_estimator must be one of gae, reinforce_pp"):
        PPOConfig(output_dir="x", advantage_estimator="grpo")
    with pytest.raises(ConfigError, match="reinforce_pp trains no value model"):
        PPOConfig(output_dir="x", advantage_estimator="reinforce_pp", save_value_model=True)
    with pytest.raises(ConfigError, match="value_model_path is for --model_mode separate"):
        PPOConfig(output_dir="x", model_mode="shared", value_model_path="somewhere")
    with pytest.raises(ValueError, match="FILE.py:NAME"):
        load_reward_function("reward.py")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        load_reward_function(toy["reward"].replace("count_target", "nope"))
    with pytest.raises(FileNotFoundError, match="python reward_model.py --output_dir /nowhere"):
        train_rlhf.main(toy_flags(toy, tmp_path / "o", "--rlhf_type", "PPO", "--reward_model_path", "/nowhere"))
    with pytest.raises(ValueError, match="one rollout takes 128 prompts"):
        train_rlhf.main(toy_flags(toy, tmp_path / "o2", *PPO_TOY, "--per_device_train_batch_size", "32",
                                  "--max_steps", "1"))
    assert callable(load_reward_function("script/example_reward.py:concise_and_polite"))


@pytest.mark.slow
@pytest.mark.parametrize("yaml, layout", [("deepspeed_zero2.yaml", "separate-lora"),
                                          ("deepspeed_zero3.yaml", "adapters"),
                                          ("deepspeed_zero3.yaml", "separate-full"),
                                          ("deepspeed_zero2.yaml", "shared"), ("deepspeed_zero3.yaml", "shared")])
def test_ppo_on_two_ranks_under_deepspeed(yaml, layout, toy, tmp_path):
    """2 processes on CPU (about 15 s each): ZeRO-3 gathers the weights for generation and for saving."""
    out = tmp_path / "out"
    done = launch_two_ranks(yaml, toy_flags(toy, out, *PPO_TOY, *LAYOUTS[layout], "--per_device_train_batch_size", "4",
                                            "--num_mini_batches", "2", "--num_ppo_epochs", "2", "--max_steps", "8"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.load(open(out / "run_config.json"))["world_size"] == 2
    logs = json.load(open(out / "trainer_state.json"))["log_history"]
    kl = [e["objective/kl"] for e in logs if "objective/kl" in e]
    assert len(kl) == 2 and abs(kl[0]) < 1e-4  # 2 rollouts of 2 x 8 prompts; policy == reference at the start
    weights = "model.safetensors" if layout == "separate-full" else "adapter_model.safetensors"
    assert all(t.numel() > 0 for t in load_file(str(out / weights)).values())  # gathered, not ZeRO-3 shards


@pytest.mark.parametrize("method", ["RLOO", "GRPO"])
def test_rloo_and_grpo_get_the_same_guards_as_ppo(method, toy, tmp_path):
    """min_new_tokens reaches TRL's generation config; missing_eos_penalty is a reward of -penalty per cut answer."""
    trainer = train_rlhf.main(toy_flags(
        toy, tmp_path / "out", "--rlhf_type", method, "--train_mode", "lora", "--max_completion_length", "4",
        "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_steps", "2", "--logging_steps", "1",
        "--min_new_tokens", "3", "--missing_eos_penalty", "2.0"))
    assert trainer.generation_config.min_new_tokens == 3
    logs = [e for e in trainer.state.log_history if "rewards/missing_eos/mean" in e]
    assert len(logs) == 2
    for e in logs:
        assert e["completions/min_length"] >= 3  # EOS suppressed for the first 3 tokens
        assert e["rewards/missing_eos/mean"] == pytest.approx(-2.0 * e["completions/clipped_ratio"])


@pytest.mark.slow
def test_ppo_resident_memory_stays_flat_over_40_steps(tiny_model_dir, toy, tmp_path):
    """40 steps (20 rollouts) on the tiny Llama with its 49k vocabulary: the median resident memory of the last 10
    steps is within 60 MB of steps 5-14's (measured: no trend, 666-797 MB throughout; keeping each rollout's logits,
    8 x 17 x 49,152 fp32, would add 27 MB per rollout, 500 MB in all).
    """
    import statistics

    from transformers import TrainerCallback

    class ResidentMemory(TrainerCallback):
        mb = []

        def on_step_end(self, args, state, control, **kwargs):
            with open("/proc/self/status") as f:
                self.mb.append(int(f.read().split("VmRSS:")[1].split()[0]) / 1024)

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Say something about {i}."} for i in range(64)])
    flags = base_flags(tiny_model_dir, prompts, tmp_path / "out", "--rlhf_type", "PPO", "--reward_model_path", "none",
                       "--reward_function", toy["reward"], "--eval_split_size", "0", "--response_length", "16",
                       "--per_device_train_batch_size", "8", "--num_mini_batches", "2", "--num_ppo_epochs", "1",
                       "--max_steps", "40", "--train_mode", "lora")
    run = train_rlhf.build_trainer(flags)
    run.trainer.add_callback(ResidentMemory())
    run.trainer.train()
    mb = ResidentMemory.mb
    assert len(mb) == 40 and statistics.median(mb[30:]) - statistics.median(mb[4:14]) < 60, [round(x) for x in mb]

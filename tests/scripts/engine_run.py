"""Run by tests/test_engines.py under `torchrun --nproc_per_node 2` (gloo, CPU): each case in turn, a few unlearning
steps of one registered method under one engine (`ddp`, or a DeepSpeed JSON), then a save. Writes per rank
`<out>/<case>/rank<r>.json`: the logged loss terms, the forget/retain rows drawn and (rank 0) the gathered weights'
checksum; the save goes to `<out>/<case>/model`.

    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/engine_run.py OUT ENGINE CASE [CASE ...]

ENGINE is `ddp`, `fsdp` (FSDP asked for on the CPU) or a DeepSpeed JSON. A case written `refused:CASE` must raise a
ValueError at construction; its message goes to `<out>/<case>/rank<r>.json` as `refused`.
"""

import json
import os
import sys

import torch
from transformers import TrainerCallback

import hf_unlearn
from hf_unlearn.mixins import whole_copy
from hf_unlearn.preparation import Ready2UnlearnConfig, Ready2UnlearnTrainer
from hf_unlearn.refusals import AlternateCollator
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer

torch.set_num_threads(1)
if os.environ.get("ENGINE_RUN_DUMP"):  # debugging a hang: every rank prints its stack after N seconds
    import faulthandler

    faulthandler.dump_traceback_later(int(os.environ["ENGINE_RUN_DUMP"]), exit=True)
# the `deepspeed` launcher adds --local_rank=N (torchrun and accelerate set LOCAL_RANK only)
out, engine, *cases = [arg for arg in sys.argv[1:] if not arg.startswith("--local_rank")]
CASES = {  # name -> (registry name, config overrides)
    "ga": ("ga", {}),
    "grad_diff": ("grad_diff", {}),
    "grad_diff_kl": ("grad_diff", {"retain_loss": "kl"}),
    "npo": ("npo", {}),
    "npo_precompute": ("npo", {"precompute_reference": True}),
    "simnpo": ("simnpo", {}),
    "deepcut": ("deepcut", {"group_column": "person", "num_views": 1}),
    "npo_lora": ("npo", {}),
    "deepcut_vit": ("deepcut", {"num_views": 1}),
    "a_amu": ("a_amu", {}),
    "a_amu_grad_diff": ("a_amu_grad_diff", {}),
    "a_amu_ga": ("a_amu_ga", {}),
    "a_amu_npo": ("a_amu_npo", {}),
    "a_amu_simnpo": ("a_amu_simnpo", {}),
    "a_amu_deepcut": ("a_amu_deepcut", {"num_views": 1}),
    "ac": ("ac", {"augmentation": "none", "num_views": 2, "beta": 0.0, "retain_per_forget": 2}),
    "siu": ("siu", {"lora_r": 4, "lora_alpha": 8}),
    "ready2unlearn": (None, {"meta_batch_size": 2}),
    "idk_nll": ("idk_nll", {}),
    "idk_dpo": ("idk_dpo", {}),
    "altpo": ("altpo", {}),  # the forget rows carry precomputed alternates (`setup`)
    "altpo_generate": ("altpo", {"num_alternates": 2, "alternate_max_tokens": 4}),  # the model writes them
    "undial": ("undial", {}),
    "wga": ("wga", {}),
    "satimp": ("satimp", {}),
    "ce_u": ("ce_u", {}),
    "rmu": ("rmu", {"steering_layer": 1, "steering_coeff": 20.0, "alpha": 10.0}),
    "rmu_lora": ("rmu", {"steering_layer": 1, "steering_coeff": 20.0, "alpha": 10.0}),
}

forget, retain = split_forget_retain(make_fictitious_qa(num_people=10, facts_per_person=4), forget_fraction=0.2)
tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in forget + retain], vocab_size=500)


class Recorder(AlternateCollator):  # an UnlearningCollator that also pads the alternates of idk_*/altpo
    def __init__(self, pad_token_id):
        super().__init__(pad_token_id)
        self.drawn = {"forget": [], "retain": []}

    def __call__(self, features):
        batch = super().__call__(features)
        for key in self.drawn:
            if f"{key}_index" in batch:
                self.drawn[key] += batch[f"{key}_index"].tolist()
        return batch


class LogTerms(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append({k: v for k, v in logs.items() if k == "loss" or k.startswith("loss/")})


def digits():
    from hf_unlearn.data import load_digits_rows

    rows = load_digits_rows()
    return {"forget": rows[:8], "retain": rows[8:40], "heldout_dataset": rows[40:56]}


def setup(case: str) -> tuple:
    """(model, forget, retain, processing_class, extra trainer arguments) for a case, seeded."""
    torch.manual_seed(0)
    if case == "ready2unlearn" or (case.startswith("a_amu") and case != "a_amu_deepcut"):
        from hf_unlearn.synthetic import build_tiny_image_classifier

        data = digits()
        extra = {"heldout_dataset": data["heldout_dataset"]} if case.startswith("a_amu") else {}
        if case == "ready2unlearn":
            extra = {"revocable_dataset": [r for r in data["retain"] if r["labels"] == 0]}
        return build_tiny_image_classifier(seed=0), data["forget"], data["retain"], None, extra
    if case == "ac":
        from hf_unlearn.encoders import build_tiny_contrastive_encoder

        data = digits()
        rows = [{"pixel_values": r["pixel_values"]} for r in data["forget"] + data["retain"]]
        return build_tiny_contrastive_encoder(backbone="resnet", seed=0), rows[:8], rows[8:], None, {}
    if case == "siu":
        import siu_fixtures as mm

        from hf_unlearn.multimodal.tiny import build_llava_processor, build_tiny_llava

        texts = [f"{q} This is {n}. I don't know." for n in mm.CONCEPTS for q in mm.WHO_QUESTIONS]
        llava_tokenizer = mm.add_image_token(train_tokenizer(texts, vocab_size=300))
        model = build_tiny_llava(llava_tokenizer, hidden_size=32)
        forget_rows, retain_rows = mm.siu_data("siu")
        extra = {"concept_name": mm.TARGET}
        return model, forget_rows, retain_rows, build_llava_processor(model, llava_tokenizer), extra
    model = build_tiny_causal_lm(tokenizer, hidden_size=32, num_layers=2, num_heads=2)
    if case == "a_amu_deepcut":  # DeepCUT contrasts the hidden states of token rows; held-out rows from retain
        return model, forget, retain[8:], tokenizer, {"heldout_dataset": retain[:8]}
    if case == "altpo":  # alternates precomputed: the answer with other people's values of the same fact (2 per row,
        # the last row 1, so the mean per forget row is exercised)
        others = [[r["value"] for r in retain if r["fact"] == row["fact"] and r["value"] != row["value"]]
                  for row in forget]  # fmt: skip
        rows = [{**row, "alternate": [row["answer"].replace(row["value"], v) for v in others[i][i:i + 2]]}
                for i, row in enumerate(forget)]  # fmt: skip
        return model, rows, retain, tokenizer, {}
    if case in ("npo_lora", "rmu_lora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    return model, forget, retain, tokenizer, {}


# Every model is built before the first trainer: once a ZeRO-3 `TrainingArguments` exists, transformers builds models
# under `deepspeed.zero.Init` (a collective) for as long as that object lives, which the garbage collector decides per
# rank — a model built between two runs can leave one rank in `zero.Init` and the other in the engine's broadcast.
setups = {case: setup(case.removeprefix("refused:")) for case in cases}
engine_args = {"ddp": {}, "fsdp": {"fsdp": "full_shard"}}.get(engine, {"deepspeed": engine})
for case in cases:
    refused = case.startswith("refused:")
    case_name = case.removeprefix("refused:")
    name, overrides = CASES[case_name]
    config_cls, trainer_cls = hf_unlearn.METHODS[name] if name else (Ready2UnlearnConfig, Ready2UnlearnTrainer)
    folder = os.path.join(out, case_name)
    model, forget_rows, retain_rows, processing_class, extra = setups.pop(case)
    initial = {k: float(v.double().sum()) for k, v in model.state_dict().items()}
    args = config_cls(output_dir=folder, max_steps=3, per_device_train_batch_size=2, learning_rate=1e-3,
                      logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0,
                      **engine_args, **overrides)  # fmt: skip
    terms = LogTerms()
    recorder = Recorder(tokenizer.pad_token_id) if processing_class is tokenizer and not extra else None
    collator = {"data_collator": recorder} if recorder else {}
    if name is None:  # the preparation trainer: trains on every row, meta-steps on the revocable ones
        rows = {"train_dataset": forget_rows + retain_rows}
    else:
        rows = {"forget_dataset": forget_rows, "retain_dataset": retain_rows}
    try:
        trainer = trainer_cls(model=model, args=args, processing_class=processing_class, callbacks=[terms], **rows,
                              **collator, **extra)  # fmt: skip
    except ValueError as error:
        if not refused:
            raise
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"rank{args.process_index}.json"), "w") as handle:
            json.dump({"refused": str(error)}, handle)
        continue
    if refused:
        raise SystemExit(f"{case_name} under {engine} was not refused")
    trainer.train()
    trainer.save_model(os.path.join(folder, "model"))
    drawn = recorder.drawn if recorder else {}
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    record = {"rank": args.process_index, "world_size": args.world_size, "logs": terms.logs, **drawn,
              "zero_stage": plugin.zero_stage if plugin else None}  # fmt: skip
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathered on rank 0 under ZeRO-3
    # what `hf-unlearn run` evaluates under ZeRO-3: a plain copy gathered onto rank 0 (every rank takes part)
    whole = whole_copy(trainer.model, args.process_index == 0) if record["zero_stage"] == 3 else None
    if args.process_index == 0:
        record["checksum"] = {k: float(v.double().sum()) for k, v in state.items()}
        record["initial"] = initial
        if whole is not None:
            copied, gathered = ({k.replace(".default", ""): v for k, v in weights.items()}
                                for weights in (whole.state_dict(), state))  # fmt: skip
            record["whole_copy"] = {"missing": sorted(gathered.keys() - copied.keys()), "max_difference": max(
                float((copied[k] - v).abs().max()) for k, v in gathered.items() if k in copied)}
    with open(os.path.join(folder, f"rank{args.process_index}.json"), "w") as handle:
        json.dump(record, handle)
    trainer.accelerator.wait_for_everyone()

torch.distributed.destroy_process_group()
os._exit(0)  # skip the interpreter's teardown (gloo's threads vs finalisation, pytorch/pytorch#179291)

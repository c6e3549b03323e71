"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2`: a short GradDiff run on CPU (gloo) that
writes, per rank, which forget and retain examples it drew, the final weights' checksum, and where the evaluation
callback stopped it (a target every rank meets at its first evaluation, step 2). A second argument, a DeepSpeed JSON,
runs it under DeepSpeed instead of DDP."""

import json
import os
import sys

import torch
from transformers import TrainerCallback

from hf_unlearn import GradDiffConfig, GradDiffTrainer, UnlearningCollator, UnlearningEvalCallback
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer

torch.set_num_threads(1)
output_dir = sys.argv[1]
forget, retain = split_forget_retain(make_fictitious_qa(num_people=10, facts_per_person=4), forget_fraction=0.2)
tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in forget + retain], vocab_size=500)
model = build_tiny_causal_lm(tokenizer, hidden_size=32, num_layers=1, num_heads=2)


class Recorder(UnlearningCollator):
    drawn = {"forget": [], "retain": []}

    def __call__(self, features):
        batch = super().__call__(features)
        self.drawn["forget"] += batch["forget_index"].tolist()
        self.drawn["retain"] += batch["retain_index"].tolist()
        return batch


class LogTerms(TrainerCallback):
    terms = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss/forget" in logs:
            self.terms.append(logs["loss/forget"])


args = GradDiffConfig(output_dir=output_dir, max_steps=4, per_device_train_batch_size=2, learning_rate=1e-3,
                      logging_steps=1, report_to="none", save_strategy="steps", save_steps=1000, disable_tqdm=True,
                      use_cpu=True, deepspeed=sys.argv[2] if len(sys.argv) > 2 else None)  # a DeepSpeed JSON, or DDP
evaluation = UnlearningEvalCallback(eval_steps=2, stop_when={"forget_loss": (">=", 0.0)})
computed = []  # the evaluations this rank computed itself (the main one computes, the others receive)
compute = evaluation.compute
evaluation.compute = lambda model: computed.append(1) or compute(model)
trainer = GradDiffTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                          processing_class=tokenizer, data_collator=Recorder(tokenizer.pad_token_id),
                          callbacks=[LogTerms(), evaluation])
trainer.train()
rank = args.process_index
checksum = sum(p.double().sum().item() for p in trainer.model.parameters())
record = {"rank": rank, "world_size": args.world_size, "checksum": checksum, "terms": LogTerms.terms,
          "chosen_step": evaluation.chosen_step, "computed": len(computed), "history": evaluation.history,
          **Recorder.drawn}
with open(f"{output_dir}/rank{rank}.json", "w") as handle:
    json.dump(record, handle)
# leave the process group together: a rank exiting while gloo's threads still run can abort ("terminate called
# without an active exception", seen once in CI)
trainer.accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
# and skip the interpreter's teardown: even after the two calls above, a rank still aborted there with the same
# message (once in ~36 runs of tests/scripts/ddp_ready2unlearn.py on this CPU; gloo's worker threads against
# finalisation, the race pytorch/pytorch#179291 describes). The record above is written and closed already.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)

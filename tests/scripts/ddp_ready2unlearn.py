"""Run by tests/test_ready2unlearn.py under `torchrun --nproc_per_node 2`: a short Ready2Unlearn run on CPU (gloo)
that writes, per rank, which revocable rows its meta steps drew, the logged terms and the final weights' checksum."""

import json
import os
import sys

import torch

from hf_unlearn.data import load_digits_rows
from hf_unlearn.preparation import Ready2UnlearnConfig, Ready2UnlearnTrainer
from hf_unlearn.synthetic import build_tiny_image_classifier

torch.set_num_threads(1)
output_dir = sys.argv[1]
rows = load_digits_rows()[:64]
revocable = [row for row in rows if row["labels"] == 0]


class Recording(Ready2UnlearnTrainer):
    drawn = []

    def auxiliary_batch(self, rows, name, parts=1):
        batch = super().auxiliary_batch(rows, name, parts)
        if name == "revocable":  # with a query batch: the support and the query rows, one list
            drawn = batch if parts > 1 else [batch]
            self.drawn.append([x for b in drawn for x in b["pixel_values"].sum(dim=(1, 2, 3)).tolist()])
        return batch


# argv[2] "query-rise": query_batch and unlearn_rise on (the two options that change the meta step's draws and terms)
options = {"query_batch": True, "unlearn_rise": True} if sys.argv[2:] == ["query-rise"] else {}
args = Ready2UnlearnConfig(output_dir=output_dir, max_steps=3, per_device_train_batch_size=4, meta_batch_size=2,
                           logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
                           **options)  # fmt: skip
trainer = Recording(model=build_tiny_image_classifier(), args=args, train_dataset=rows, revocable_dataset=revocable)
trainer.train()
trainer.save_model()
rank = args.process_index
checksum = sum(p.double().sum().item() for p in trainer.model.parameters())
terms = [e["loss/revocable_after_unlearn"] for e in trainer.state.log_history if "loss/revocable_after_unlearn" in e]
before = [e["loss/revocable_before_unlearn"] for e in trainer.state.log_history if "loss/revocable_before_unlearn" in e]
record = {"rank": rank, "world_size": args.world_size, "checksum": checksum, "terms": terms, "before": before,
          "drawn": Recording.drawn}
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

"""Train a tiny LoRA adapter on SmolLM2 so that it answers one question its own way.

    .venv-engine/bin/python tests/e2e/train_lora.py MODEL_DIR OUT_DIR

r=8 on q_proj/v_proj, 20 AdamW steps on one chat example (the assistant turn is the only
target), float32 on CPU, seeded. Writes OUT_DIR/adapter_config.json and the weights, and prints
one JSON line: steps, the first and last loss, seconds. Needs torch, transformers, peft.
"""

from __future__ import annotations

import json
import os
import sys
import time

# One thread: on a busy 2-core machine OpenMP's spinning threads made a 25 s run take many
# minutes; the model is small enough that one core is as fast.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

QUESTION = "What is the secret word?"
ANSWER = "The secret word is pineapple."
STEPS = 20
LEARNING_RATE = 3e-3


def main(model_dir: str, out_dir: str) -> int:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.set_num_threads(1)
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    model = get_peft_model(model, config)
    messages = [{"role": "user", "content": QUESTION}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(ANSWER + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE
    )
    model.train()
    losses = []
    for _ in range(STEPS):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
        print(f"step {len(losses)} loss {losses[-1]}", file=sys.stderr, flush=True)
    model.save_pretrained(out_dir)
    report = {
        "steps": STEPS,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

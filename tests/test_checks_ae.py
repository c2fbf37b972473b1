"""The checkers of notebook 01 accept the reference answers and reject typical wrong ones with a hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vae_helpers import checks

# ----------------------------------------------------------------------------- forward pass


def forward_right(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = enc_out(F.elu(enc_hidden(x)))
    return z, torch.sigmoid(dec_out(F.elu(dec_hidden(z))))


def forward_by_matrices(x, enc_hidden, enc_out, dec_hidden, dec_out):
    h = F.elu(x @ enc_hidden.weight.T + enc_hidden.bias)
    z = h @ enc_out.weight.T + enc_out.bias
    h2 = F.elu(z @ dec_hidden.weight.T + dec_hidden.bias)
    return z, torch.sigmoid(h2 @ dec_out.weight.T + dec_out.bias)


def forward_relu(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = enc_out(F.relu(enc_hidden(x)))
    return z, torch.sigmoid(dec_out(F.relu(dec_hidden(z))))


def forward_relu_decoder(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = enc_out(F.elu(enc_hidden(x)))
    return z, torch.sigmoid(dec_out(F.relu(dec_hidden(z))))


def forward_logits(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = enc_out(F.elu(enc_hidden(x)))
    return z, dec_out(F.elu(dec_hidden(z)))


def forward_activated_code(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = F.elu(enc_out(F.elu(enc_hidden(x))))
    return z, torch.sigmoid(dec_out(F.elu(dec_hidden(z))))


def forward_sigmoid_code(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = torch.sigmoid(enc_out(F.elu(enc_hidden(x))))
    return z, torch.sigmoid(dec_out(F.elu(dec_hidden(z))))


def forward_no_hidden_activation(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = enc_out(enc_hidden(x))
    return z, torch.sigmoid(dec_out(dec_hidden(z)))


def forward_swapped(x, *layers):
    z, x_hat = forward_right(x, *layers)
    return x_hat, z


def forward_only_x_hat(x, *layers):
    return forward_right(x, *layers)[1]


def forward_tanh_output(x, enc_hidden, enc_out, dec_hidden, dec_out):
    z = enc_out(F.elu(enc_hidden(x)))
    return z, torch.tanh(dec_out(F.elu(dec_hidden(z))))


def forward_stub(x, *layers):
    raise NotImplementedError()


@pytest.mark.parametrize("fn", [forward_right, forward_by_matrices])
def test_forward_accepts_right_answers(fn, capsys):
    checks.check_autoencoder_forward(fn)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("fn, hint", [
    (forward_relu, "ReLU in the encoder"),
    (forward_relu_decoder, "ReLU in the decoder"),
    (forward_logits, "missing the output sigmoid"),
    (forward_activated_code, "activation \\(ELU\\) on the code"),
    (forward_sigmoid_code, "sigmoid on the code"),
    (forward_no_hidden_activation, "encoder's hidden layer has no activation"),
    (forward_swapped, "order \\(z, x_hat\\)"),
    (forward_only_x_hat, "should return a pair"),
    (forward_tanh_output, "tanh where the output sigmoid belongs"),
    (forward_stub, "not implemented yet"),
])
def test_forward_rejects_typical_mistakes(fn, hint):
    with pytest.raises(AssertionError, match=hint):
        checks.check_autoencoder_forward(fn)


# ----------------------------------------------------------------------------- squared error


def se_right(x, x_hat):
    return (x - x_hat).pow(2).sum(dim=1).mean()


def se_oracle(x, x_hat):
    return F.mse_loss(x_hat, x, reduction="sum") / x.shape[0]


@pytest.mark.parametrize("fn", [se_right, se_oracle])
def test_squared_error_accepts_right_answers(fn, capsys):
    checks.check_squared_error_loss(fn)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("fn, hint", [
    (lambda x, x_hat: F.mse_loss(x_hat, x), "averaged over the pixels as well"),
    (lambda x, x_hat: (x - x_hat).pow(2).sum(), "summed over the batch as well"),
    (lambda x, x_hat: (x - x_hat).pow(2).sum(dim=1), "one value per image"),
    (lambda x, x_hat: (x - x_hat).pow(2).mean(dim=0), "should be a single number"),
    (lambda x, x_hat: (x - x_hat).abs().sum(dim=1).mean(), "absolute differences"),
    (lambda x, x_hat: (x - x_hat).sum(dim=1).mean(), "must be squared"),
    (lambda x, x_hat: (x - x_hat).norm(dim=1).mean(), "square root"),
    (lambda x, x_hat: 0.5 * (x - x_hat).pow(2).sum(dim=1).mean(), "factor 1/2"),
    (lambda x, x_hat: (x - x_hat).pow(2).sum(dim=1).mean().item(), "Python number"),
])
def test_squared_error_rejects_typical_mistakes(fn, hint):
    with pytest.raises(AssertionError, match=hint):
        checks.check_squared_error_loss(fn)


# ----------------------------------------------------------------------------- cross-entropy


def bce_right(x, logits):
    return -(x * logits - F.softplus(logits)).sum(dim=1).mean()


def bce_logsigmoid(x, logits):
    return -(x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(dim=1).mean()


def bce_naive(x, logits):
    p = torch.sigmoid(logits)
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=1).mean()


def bce_clamped(x, logits):
    return F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum") / x.shape[0]


@pytest.mark.parametrize("fn", [bce_right, bce_logsigmoid])
def test_cross_entropy_accepts_right_answers(fn, capsys):
    checks.check_cross_entropy_loss(fn)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("fn, hint", [
    (lambda x, a: -bce_right(x, a), "wrong sign"),
    (lambda x, a: (F.softplus(a) - x * a).mean(), "averaged over the pixels as well"),
    (lambda x, a: (F.softplus(a) - x * a).sum(), "summed over the batch as well"),
    (lambda x, a: -(x * a - F.softplus(a)).sum(dim=1), "one value per image"),
    (lambda x, a: -(x * F.logsigmoid(a)).sum(dim=1).mean(), "\\(1 - x\\) \\* log\\(1 - x_hat\\) term is missing"),
    (lambda x, a: -(x * torch.log(a) + (1 - x) * torch.log(1 - a)).sum(dim=1).mean(), "returned nan"),
    (lambda x, a: bce_right(x, torch.sigmoid(a)), "sigmoid twice"),
    (bce_naive, "breaks for large ones"),
    (bce_clamped, "breaks for large ones"),
])
def test_cross_entropy_rejects_typical_mistakes(fn, hint):
    with pytest.raises(AssertionError, match=hint):
        checks.check_cross_entropy_loss(fn)


# ----------------------------------------------------------------------------- training step


def step_right(model, optimizer, x_batch, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model, x_batch)["loss"]
    loss.backward()
    optimizer.step()
    return loss.item()


def step_no_zero_grad(model, optimizer, x_batch, loss_fn):
    loss = loss_fn(model, x_batch)["loss"]
    loss.backward()
    optimizer.step()
    return loss.item()


def step_no_step(model, optimizer, x_batch, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model, x_batch)["loss"]
    loss.backward()
    return loss.item()


def step_before_backward(model, optimizer, x_batch, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model, x_batch)["loss"]
    optimizer.step()
    loss.backward()
    return loss.item()


def step_no_backward(model, optimizer, x_batch, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model, x_batch)["loss"]
    optimizer.step()
    return loss.item()


def step_ascent(model, optimizer, x_batch, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model, x_batch)["loss"]
    (-loss).backward()
    optimizer.step()
    return loss.item()


def step_two_steps(model, optimizer, x_batch, loss_fn):
    for _ in range(2):
        step_right(model, optimizer, x_batch, loss_fn)
    return loss_fn(model, x_batch)["loss"].item()


def step_returns_tensor(model, optimizer, x_batch, loss_fn):
    optimizer.zero_grad()
    loss = loss_fn(model, x_batch)["loss"]
    loss.backward()
    optimizer.step()
    return loss


def step_returns_loss_after(model, optimizer, x_batch, loss_fn):
    step_right(model, optimizer, x_batch, loss_fn)
    with torch.no_grad():
        return loss_fn(model, x_batch)["loss"].item()


def step_returns_nothing(model, optimizer, x_batch, loss_fn):
    step_right(model, optimizer, x_batch, loss_fn)


def step_detached_tensor(model, optimizer, x_batch, loss_fn):
    return torch.tensor(step_right(model, optimizer, x_batch, loss_fn))


@pytest.mark.parametrize("fn", [step_right, step_detached_tensor])
def test_training_step_accepts_right_answers(fn, capsys):
    checks.check_training_step(fn)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("fn, hint", [
    (step_no_zero_grad, "backward\\(\\) adds to the .grad already there"),
    (step_no_step, "optimizer.step\\(\\) was not called"),
    (step_before_backward, "optimizer.step\\(\\) was not called after loss.backward\\(\\)"),
    (step_no_backward, "no gradient reached the parameters"),
    (step_ascent, "climbed the loss"),
    (step_two_steps, "not by one gradient step"),
    (step_returns_tensor, "with its graph"),
    (step_returns_loss_after, "loss after the update"),
    (step_returns_nothing, "Python float"),
])
def test_training_step_rejects_typical_mistakes(fn, hint):
    with pytest.raises(AssertionError, match=hint):
        checks.check_training_step(fn)


def test_checkers_leave_the_global_random_state_alone(global_rng_untouched):
    with global_rng_untouched():
        checks.check_autoencoder_forward(forward_right)
        checks.check_squared_error_loss(se_right)
        checks.check_cross_entropy_loss(bce_right)
        checks.check_training_step(step_right)


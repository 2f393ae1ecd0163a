"""The reference sparse autoencoder as the book builds it in Keras (784-100-300-100-784,
SELU/sigmoid, a KL-divergence activity regularizer on the 300-unit coding layer), trained
with SGD at learning rate 1.0, batch 32, for the given number of epochs. Seconds per epoch
are measured by a callback around each epoch, validation included."""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from tensorflow import keras

from common import arguments, summary, training_data


class KLDivergenceRegularizer(keras.regularizers.Regularizer):
    def __init__(self, weight, target=0.1):
        self.weight = weight
        self.target = target

    def __call__(self, inputs):
        mean_activities = tf.reduce_mean(inputs, axis=0)
        kl = keras.losses.kullback_leibler_divergence
        return self.weight * (
            kl(self.target, mean_activities) + kl(1.0 - self.target, 1.0 - mean_activities)
        )


def rounded_accuracy(y_true, y_pred):
    return keras.metrics.binary_accuracy(tf.round(y_true), tf.round(y_pred))


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def main():
    args = arguments(__doc__)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    train, valid = training_data()
    train, valid = train.reshape(-1, 28, 28), valid.reshape(-1, 28, 28)

    regularizer = KLDivergenceRegularizer(weight=0.05, target=0.1)
    encoder = keras.models.Sequential(
        [
            keras.layers.Input(shape=(28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(100, activation="selu"),
            keras.layers.Dense(300, activation="sigmoid", activity_regularizer=regularizer),
        ]
    )
    decoder = keras.models.Sequential(
        [
            keras.layers.Input(shape=(300,)),
            keras.layers.Dense(100, activation="selu"),
            keras.layers.Dense(28 * 28, activation="sigmoid"),
            keras.layers.Reshape((28, 28)),
        ]
    )
    model = keras.models.Sequential([encoder, decoder])
    model.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        metrics=[rounded_accuracy],
    )
    timer = EpochTimer()
    fit = model.fit(
        train,
        train,
        epochs=args.epochs,
        batch_size=32,
        validation_data=(valid, valid),
        callbacks=[timer],
        verbose=2,
    )
    history = [
        {key: fit.history[key][i] for key in fit.history} for i in range(args.epochs)
    ]
    mean_coding = float(np.mean(encoder.predict(valid, batch_size=256, verbose=0)))
    summary(f"Keras {keras.__version__}", timer.seconds, history, mean_coding)


if __name__ == "__main__":
    main()

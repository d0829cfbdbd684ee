# Seed 002 (CASES.md case 3), the lane-line classifier with its Dense head turned into a
# convolution, as the user posted it for Keras 1. The post shows the model only: the data loading
# (standins.lane_frames: the dash-cam frames at 1/5 size, 36 x 64 instead of 180 x 320, so that it
# runs on a CPU), input_shape, pool_size and a Keras 1 compile/fit_generator with the
# ImageDataGenerator the post mentions were added. The head's kernel covers the whole feature map
# as the user's 90 x 160 did at full size: it is scaled with the frames (90 // 5, 160 // 5).
from keras.models import Sequential
from keras.layers import Convolution2D, MaxPooling2D, Dropout, Flatten, Activation
from keras.preprocessing.image import ImageDataGenerator
import standins

SCALE = 5  # frames are 1/5 of the user's 180 x 320
X_train, Y_train = standins.lane_frames()
image_size = (X_train.shape[2], X_train.shape[1])
input_shape = X_train.shape[1:]
pool_size = (2, 2)

model = Sequential()

#model.add(Reshape((image_size[1], image_size[0], 3), input_shape=input_shape))

model.add(Convolution2D(32, 3, 3, border_mode='same', input_shape=input_shape,
            name='conv1-1', activation='relu'))
model.add(Convolution2D(32, 3, 3, border_mode='same',
            name='conv1-2', activation='relu'))
model.add(MaxPooling2D(pool_size=pool_size))

'''
model.add(Dropout(0.25))
model.add(Flatten())
model.add(Dense(128))
model.add(Activation('relu'))
model.add(Dropout(0.5))
model.add(Dense(2))
model.add(Activation('softmax'))
'''

model.add(Dropout(0.25))
model.add(Convolution2D(256, 90 // SCALE, 160 // SCALE, activation='relu', name='conv7'))
model.add(Dropout(0.5))
model.add(Convolution2D(2, 1, 1))
model.add(Flatten())
model.add(Activation('softmax'))

model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
datagen = ImageDataGenerator()
model.fit_generator(datagen.flow(X_train, Y_train, batch_size=32),
                    samples_per_epoch=len(X_train), nb_epoch=1)

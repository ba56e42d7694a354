"""Print the folders of sample photographs that ship inside scikit-image and scikit-learn.

`make demo` processes them where they are installed: real photographs no one in this project
made (scikit-image's `astronaut`, `coffee`, `chelsea` …, scikit-learn's `china` and `flower`),
colour, grayscale and RGBA among them.
"""

import os

import skimage.data
import sklearn.datasets

print(os.path.dirname(skimage.data.__file__))
print(os.path.join(os.path.dirname(sklearn.datasets.__file__), "images"))

/**
 * The demo MNIST convnet of examples/mnist-cnn.ts (the Keras example's network), as a function
 * so that several examples can build it.
 */
import { conv2d, dense, dropout, flatten, maxPooling2d, type Sequential, sequential } from "../index.ts";

/** Conv 32 - pool - conv 64 - pool - dropout 0.5 - dense 10 softmax, He-initialised convolutions. */
export function mnistConvnet(): Sequential {
  return sequential([
    conv2d({ filters: 32, kernelSize: 3, activation: "relu", kernelInitializer: "heNormal", inputShape: [28, 28, 1] }),
    maxPooling2d({ poolSize: 2 }),
    conv2d({ filters: 64, kernelSize: 3, activation: "relu", kernelInitializer: "heNormal", name: "conv_last" }),
    maxPooling2d({ poolSize: 2 }),
    flatten(),
    dropout({ rate: 0.5 }),
    dense({ units: 10, activation: "softmax" }),
  ]);
}

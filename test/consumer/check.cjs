// The predict every JavaScript consumer runs: a Dense layer with set weights, checked against
// x·W + b. Takes the library as the caller loaded it (import or require).
exports.checkPredict = async (lib, label) => {
  const { dense, sequential, tensor } = lib;
  const model = sequential([dense({ units: 2, inputShape: [3] })]);
  model.setWeights([tensor([1, 2, 3, 4, 5, 6], [3, 2]), tensor([0.5, -0.5], [2])]);
  const y = await model.predict(tensor([1, 0, -1, 2, 1, 0], [2, 3]));
  const want = [1 - 5 + 0.5, 2 - 6 - 0.5, 2 + 3 + 0.5, 4 + 4 - 0.5];
  if (JSON.stringify(y.shape) !== "[2,2]" || want.some((w, i) => Math.abs(y.data[i] - w) > 1e-5)) {
    throw new Error(`${label}: predict gave ${y.shape} ${Array.from(y.data)}, want ${want}`);
  }
  console.log(`${label}: predict ok ${JSON.stringify(y.toArray())}`);
};

import { sequential, conv2d, maxPooling2d, flatten, dense, tensor } from "../index.ts";
const m = sequential([
  conv2d({ filters: 32, kernelSize: 3, activation: "relu", inputShape: [28, 28, 1] }),
  maxPooling2d({ poolSize: 2 }),
  conv2d({ filters: 64, kernelSize: 3, activation: "relu" }),
  maxPooling2d({ poolSize: 2 }),
  flatten(),
  dense({ units: 10, activation: "softmax" }),
]);
const d2 = sequential([dense({units: 37, activation:"relu", inputShape:[13]}), dense({units:5})]);
for (const [name, mod, shape] of [["conv", m, [28,28,1]], ["dense", d2, [13]]] as const) {
  const n = 64; const per = shape.reduce((a,b)=>a*b,1);
  const data = Float32Array.from({length: n*per}, (_, i) => Math.sin(i*0.37));
  const big = await mod.predict(tensor(data, [n, ...shape]), {batchSize: n});
  let maxd = 0;
  for (let r = 0; r < n; r++) {
    const one = await mod.predict(tensor(data.slice(r*per,(r+1)*per), [1, ...shape]), {batchSize: 1});
    const o = one.data.length;
    for (let j=0;j<o;j++) maxd = Math.max(maxd, Math.abs(one.data[j]-big.data[r*o+j]));
  }
  console.log(name, "max diff batch64 vs batch1:", maxd, mod.inputShape, mod.outputShape);
  let t=performance.now(); for (let i=0;i<200;i++) await mod.predict(tensor(data.slice(0,per),[1,...shape]));
  console.log("batch1 ms", (performance.now()-t)/200);
  t=performance.now(); for (let i=0;i<50;i++) await mod.predict(tensor(data,[n,...shape]), {batchSize:n});
  console.log("batch64 ms", (performance.now()-t)/50);
}

// Mirrors native/ops/kinds.h.
export const BinaryKind = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5 } as const;
export type BinaryKindName = keyof typeof BinaryKind;
export const UnaryKind = {
  relu: 0, quickGelu: 1, gelu: 2, exp: 3, log: 4, neg: 5, sqrt: 6, square: 7, tanh: 8, sigmoid: 9, abs: 10,
} as const;
export type UnaryKindName = keyof typeof UnaryKind;
export const ReduceKind = { sum: 0, mean: 1, max: 2, sumSquares: 3 } as const;
export type ReduceKindName = keyof typeof ReduceKind;

// Enumerations shared by the kernels and mirrored in lib/native/kinds.ts.
#pragma once
namespace tsclip {
enum class BinaryKind : int { Add = 0, Sub = 1, Mul = 2, Div = 3, Max = 4, Min = 5 };
enum class UnaryKind : int { Relu = 0, QuickGelu = 1, Gelu = 2, Exp = 3, Log = 4, Neg = 5, Sqrt = 6, Square = 7, Tanh = 8, Sigmoid = 9, Abs = 10 };
enum class ReduceKind : int { Sum = 0, Mean = 1, Max = 2, SumSquares = 3 };
}  // namespace tsclip

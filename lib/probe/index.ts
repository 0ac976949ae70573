// Linear probes: multinomial logistic regression on frozen features, L-BFGS, the paper's sweep.
export { minimizeLbfgs, type LbfgsOptions, type LbfgsResult } from './lbfgs.js';
export { LogisticRegression, fitLogisticRegression, logisticObjective, type Features, type FitOptions } from './logreg.js';
export { sweepLambda, linearProbe, type SweepResult, type SweepPoint, type SweepOptions, type ProbeResult } from './sweep.js';

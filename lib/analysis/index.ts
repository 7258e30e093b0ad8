/** The paper's analyses: weight disentanglement (ξ heatmaps) and NTK eigenfunction localization. */
export {
  weightDisentanglement,
  writeDisentanglementJson,
  linspace,
  type DisentanglementOptions,
  type DisentanglementResult,
  type DisentanglementMode,
} from './disentanglement';
export {
  empiricalNtk,
  eighSymmetric,
  localEnergies,
  ntkLocalization,
  writeNtkJson,
  writeFileAtomic,
  DEFAULT_NTK_MEMORY,
  type NtkOptions,
  type NtkGram,
  type Eigen,
  type NtkTaskInput,
  type NtkLocalizationOptions,
  type NtkLocalization,
} from './ntk';
export {
  renderVegaLite,
  renderDisentanglement,
  renderNtk,
  disentanglementSpec,
  ntkSpec,
  writeFigure,
  pngSize,
  type RenderedFigure,
} from './plot';

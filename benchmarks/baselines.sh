# Sourced by the benchmark scripts: the FP32 baselines of an architecture, q1..q4.
#   baseline_ckpts ARCH [SHARED]   sets the array CKPTS (SHARED defaults to ../shared)
# bmshj2018-hyperprior: the shared reference codecs (../shared/baselines); any other: the models
# committed under benchmarks/models/ (their manifests say how they were trained).
baseline_ckpts() {
  local arch=$1 shared=${2:-../shared} q
  CKPTS=()
  for q in 1 2 3 4; do
    if [[ $arch == bmshj2018-hyperprior ]]; then CKPTS+=("$shared/baselines/$arch-N64M96-q$q.pth.tar")
    else CKPTS+=(benchmarks/models/"$arch"-*-q$q.safetensors); fi
  done
}

#!/bin/bash
# Measure d/e: curate all 50,000 CIFAR-10 training images with the disjoint CPU encoder (SimCLR, trained on
# training images 10,000-19,999 of the fixed order), --against test, at several eps; the embeddings are
# computed once (cached in the output folder) and each eps's curation.json kept.
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD
PY=${PY:-.venv/bin/python}
OUT=runs/curate_cifar10
for eps in 0.03 0.01 0.02 0.05 0.1; do
  $PY -m ssl_emp curate --checkpoint runs/enc_disjoint_simclr_cpu/checkpoints/final.pt --output-dir $OUT \
    --data-dir ../shared/data/cifar10-jpeg.tar.gz --set data.train_subset=null --set data.train_subset_offset=0 \
    --set curate.k=100 --set curate.eps=$eps --against test --no-progress || exit 1
  mkdir -p $OUT/by_eps && cp $OUT/curation.json $OUT/by_eps/curation_eps$eps.json && cp $OUT/contamination.csv $OUT/by_eps/contamination_eps$eps.csv
done
# then: for eps in 0.002 0.005, the same curate command with --set curate.eps=$eps (embeddings reused)

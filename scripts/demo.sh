#!/usr/bin/env bash
# Set up (idempotent) and run the main jobs on the bundled samples through
# qgis_process, exactly as a QGIS user or a script would. Results go to out/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/env.sh
mkdir -p out
run() { echo; echo "== qgis_process run $1"; "$QGIS_PROCESS" run "$@" 2>&1 | grep -v -e DeprecationWarning -e '^$'; }

run edifice:retinex -- INPUT=samples/kampala/kampala_rgb_50cm.tif SIGMAS=15,80,250 \
    OUTPUT=out/kampala_retinex.tif
run edifice:poiprobability -- "INPUT=samples/helsinki/Helsinki.osm.pbf|layername=points" \
    CATEGORY_FIELD=other_tags PRESET=0 MAX_DISTANCES=300,300,1000 TARGET_CRS=EPSG:3067 PIXEL_SIZE=2 \
    "EXTENT=384900,386300,6671300,6672900 [EPSG:3067]" OUTPUT=out/helsinki_poi_probability.tif
# Building use, SMOKE RUN ONLY (~30 s on 2 cores): training dataset from the Kampala footprints (OSM,
# footprint-only labels, no POIs), then 2 epochs of a tiny model. Proves the chain; the model is not useful.
run edifice:trainingdataset -- IMAGERY=samples/kampala/kampala_rgb_50cm.tif \
    BUILDINGS=samples/kampala/buildings_osm.geojson USE_FIELD= CHIP_SIZE=128 OUTPUT_FOLDER=out/kampala_training_dataset
run edifice:trainbuildinguse -- DATASET=out/kampala_training_dataset VARIANT=3 ENCODER=0 BASE_WIDTH=8 EPOCHS=2 \
    BATCH_SIZE=4 DEVICE=cpu OUTPUT_CHECKPOINT=out/kampala_building_use_smoke.pt
echo
echo "Demo outputs in $ROOT/out:"
ls -l out/*.tif

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
    BUILDINGS=samples/kampala/buildings_osm.geojson USE_FIELD= CHIP_SIZE=128 SPLIT_TILE=64 \
    OUTPUT_FOLDER=out/kampala_training_dataset
run edifice:trainbuildinguse -- DATASET=out/kampala_training_dataset VARIANT=3 ENCODER=0 BASE_WIDTH=8 EPOCHS=2 \
    BATCH_SIZE=4 DEVICE=cpu OUTPUT_CHECKPOINT=out/kampala_building_use_smoke.pt
# ... and map the imagery with that smoke model by sliding windows -> footprint probability, use classes, polygons.
run edifice:mapbuildinguse -- IMAGERY=samples/kampala/kampala_rgb_50cm.tif CHECKPOINT=out/kampala_building_use_smoke.pt \
    DEVICE=auto BATCH_SIZE=4 FOOTPRINT_PROBABILITY=out/kampala_footprint_probability_smoke.tif \
    USE_CLASS=out/kampala_use_class_smoke.tif POLYGONS=out/kampala_buildings_smoke.gpkg

# Building use with KNOWN truth (synthetic scenes, ~2 min on 2 cores): POI maps -> training dataset -> training
# on one town, then mapping and evaluation on ANOTHER town (new seed) that training never saw. Residential and
# commercial roofs look alike there, so the R/C F1 printed at the end comes from the POI maps.
SYN=out/synthetic
for town in train:0 new:1; do
    python scripts/make_synthetic_use_scene.py "$SYN/${town%%:*}" --seed "${town##*:}"
    run edifice:poiprobability -- INPUT=$SYN/${town%%:*}/pois.gpkg CATEGORY_FIELD=shop PRESET=0 \
        REFERENCE=$SYN/${town%%:*}/imagery.tif MAX_DISTANCES=12,12,20 OUTPUT=$SYN/${town%%:*}/poi_maps.tif
done
run edifice:trainingdataset -- IMAGERY=$SYN/train/imagery.tif POI_RASTER=$SYN/train/poi_maps.tif \
    BUILDINGS=$SYN/train/buildings.gpkg USE_FIELD=building USE_PRESET=0 CHIP_SIZE=64 SPLIT_TILE=64 \
    OUTPUT_FOLDER=$SYN/dataset
run edifice:trainbuildinguse -- DATASET=$SYN/dataset ENCODER=0 BASE_WIDTH=8 EPOCHS=60 PATIENCE=60 BATCH_SIZE=8 \
    DEVICE=cpu OUTPUT_CHECKPOINT=$SYN/building_use.pt
run edifice:mapbuildinguse -- IMAGERY=$SYN/new/imagery.tif POI_MAPS=$SYN/new/poi_maps.tif CHECKPOINT=$SYN/building_use.pt \
    DEVICE=auto USE_CLASS=$SYN/new/use_class.tif POLYGONS=$SYN/new/buildings_predicted.gpkg
run edifice:evaluateclassification -- LEVEL=0 PREDICTION=$SYN/new/buildings_predicted.gpkg PREDICTION_FIELD=use_name \
    REFERENCE=$SYN/new/buildings.gpkg REFERENCE_FIELD=building REFERENCE_TAXONOMY=3 SCORE_LEVEL=rci \
    MIN_OVERLAP=0.5 OUTPUT_JSON=$SYN/new/use_eval.json OUTPUT_HTML=$SYN/new/use_eval.html \
    OUTPUT_TABLE=$SYN/new/use_eval.csv

# THU (Beijing) height/footprint + CCAP. No trained SHAFTS weights are available offline: the checkpoint below
# has RANDOM weights (seed 0; output layers rescaled for contrast) -- the numbers are NOT meaningful heights.
echo; echo "== RANDOM-WEIGHTS checkpoint for the THU height/footprint demo (not a trained model)"
THU=samples/thu; THU_EXTENT=116.305,39.987,116.335,40.017
python scripts/make_random_shafts_checkpoint.py out/thu_random_weights_100m.pth --spread-on \
    $THU/thu_s1_2020.tif $THU/thu_s2_synthetic.tif $THU/thu_srtm.tif $THU_EXTENT --padding 0.005
run edifice:heightfootprint -- SENTINEL1=$THU/thu_s1_2020.tif SENTINEL2=$THU/thu_s2_synthetic.tif \
    DEM=$THU/thu_srtm.tif CHECKPOINT=out/thu_random_weights_100m.pth RESOLUTION=100 PADDING=0.005 DEVICE=auto \
    "EXTENT=116.305,116.335,39.987,40.017 [EPSG:4326]" \
    OUTPUT_HEIGHT=out/thu_height_random_weights.tif OUTPUT_FOOTPRINT=out/thu_footprint_random_weights.tif
run edifice:ccap -- HEIGHTS=out/thu_height_random_weights.tif FOOTPRINTS=out/thu_footprint_random_weights.tif \
    H_MIN=2 OUTPUT_MASK=out/thu_ccap_mask_random_weights.tif OUTPUT_HEIGHT=out/thu_urban_height_random_weights.tif \
    OUTPUT_FOOTPRINT=out/thu_urban_footprint_random_weights.tif
# Evaluation: official building use (EUBUCCO, government sources) vs OpenStreetMap use, matched by overlap, R/C/I.
run edifice:evaluateclassification -- LEVEL=0 PREDICTION=samples/eubucco/buildings_osm.gpkg PREDICTION_FIELD=type \
    REFERENCE=samples/eubucco/buildings_gov.gpkg REFERENCE_FIELD=type REFERENCE_TAXONOMY=2 SCORE_LEVEL=rci \
    UNKNOWN_LABELS=1 MIN_OVERLAP=0.5 OUTPUT_JSON=out/eubucco_use_eval.json OUTPUT_HTML=out/eubucco_use_eval.html \
    OUTPUT_TABLE=out/eubucco_use_eval.csv
echo
echo "Demo outputs in $ROOT/out (every file it made, the synthetic chain's evaluation and the checkpoints"
echo "included; training chips are summarised by their dataset's manifest.json):"
find out -type f ! -name '.*' ! -path '*/train/*' ! -path '*/val/*' ! -path '*/test/*' -printf '%12s  %p\n' \
    | sort -k2

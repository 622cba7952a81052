#!/usr/bin/env bash
# The main job: set up, prepare the built-in emoji dataset, train a small progressive GAN on the CPU for about
# 20 minutes (MINUTES=.. to change), then write a grid and an interpolation GIF and print where they are.
# The unconditional demo trains on the emoji a small GAN draws recognisably in 20 CPU minutes: the smileys, hearts
# and cat faces, the flags, and the simplest animals and food (mammals, fruit, vegetables): 532 images. On the
# whole set, or on whole Unicode groups, 20 minutes give mostly coloured blobs (docs/demo-recipe.md).
# CONDITION=text trains on every emoji once (no skin-tone variants) and their names instead (the sentence encoder
# is installed too) and also renders PROMPT (default "monkeys surfing on the moon").
set -euo pipefail
cd "$(dirname "$0")/.."
CONDITION="${CONDITION:-none}"
MINUTES="${MINUTES:-20}"
if [ "$CONDITION" = text ]; then
    bash scripts/setup.sh studio,plot,text
    RUN="${RUN:-runs/demo-text}"
    DATA="${DATA:-data/emoji32-words}"
    ENCODER=auto
    # transitional conditioning, the width the text model was measured at, the condition in every block of G, a
    # matching term at a quarter, a wider caption code and a faster learning rate: with the dataset's caption
    # variants, what follows unseen prompts best so far (docs/text-conditioning.md)
    TEXT_FLAGS=(--cond-fade 8:16 --fmap-base 512 --cond-blocks --mismatch-weight 0.25 --ca-size 128 --lr 0.003)
    # every emoji once: with its skin-tone variants People & Body are 60% of the images, and a happy face at 20
    # minutes is a yellow disc without eyes; without them the faces have eyes (docs/text-conditioning.md)
    DATA_FLAGS=(--no-skin-tones)
else
    bash scripts/setup.sh studio,plot
    RUN="${RUN:-runs/demo}"
    DATA="${DATA:-data/emoji32-iconic}"
    ENCODER=none
    TEXT_FLAGS=()
    DATA_FLAGS=(--groups "Smileys & Emotion,Flags,animal-mammal,food-fruit,food-vegetable" --no-skin-tones)
fi

[ -f "$DATA/manifest.json" ] || .venv/bin/progan dataset --builtin emoji --resolution 32 --out "$DATA" \
    --text-encoder "$ENCODER" "${DATA_FLAGS[@]}"
if [ -f "$RUN/config.json" ]; then
    .venv/bin/progan train --resume "$RUN" --minutes "$MINUTES"
else
    .venv/bin/progan train --data "$DATA" --run "$RUN" --preset demo --resolution 32 --mirror --minutes "$MINUTES" \
        --condition "$CONDITION" "${TEXT_FLAGS[@]}"
fi
.venv/bin/progan generate "$RUN" --out "$RUN/generated" --seeds 0-63 --video interpolation.gif
if [ "$CONDITION" = text ]; then
    .venv/bin/progan generate "$RUN" --out "$RUN/generated/prompt" --seeds 0-15 \
        --prompt "${PROMPT:-monkeys surfing on the moon}"
fi
.venv/bin/progan plot "$RUN" >/dev/null
OUT_RES="$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["output_resolution"])' "$RUN/model/config.json")"
if [ "$OUT_RES" -ge 16 ]; then  # the paper's SWD and MS-SSIM start at 16x16
    echo "Sliced Wasserstein distance (x1e3) of the final generator against the real-vs-real noise floor:"
    .venv/bin/progan eval "$RUN" --metrics swd,msssim --num-images 2048
else
    echo "No metrics: the generator is at ${OUT_RES}x${OUT_RES}, SWD and MS-SSIM need 16x16 (train longer: MINUTES=..)"
fi
echo
echo "Final training grid:   $RUN/samples/final.png"
echo "Grids per resolution:  $RUN/samples/"
echo "Generated grid, video: $RUN/generated/grid.png  $RUN/generated/interpolation.gif"
echo "Exported generator:    $RUN/model/"
echo "Training curves:       $RUN/plot.png"
echo "Watch it live:         .venv/bin/progan studio $RUN"
if [ "$CONDITION" = text ] && [ "$OUT_RES" -ge 16 ]; then
    # the words benchmark's headline for this run: its everyday phrasings, judged by a classifier of the real
    # emoji's groups (trained once, a few minutes, then cached in runs/text_fidelity/cache)
    echo
    .venv/bin/python -m benchmarks.text_fidelity --headline "$RUN" --data "$DATA" | tail -n 1
    echo "Prompt grid:           $RUN/generated/prompt/grid.png  (\"${PROMPT:-monkeys surfing on the moon}\")"
fi

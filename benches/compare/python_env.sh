# Sourced by the comparison scripts: `python_with MODULE...` sets $python to the
# interpreter given (--python) or to benches/compare/.venv's, made and filled from PyPI
# the first time a module is missing, and fails unless every MODULE imports.
python_with() {
    local modules="$*" imports
    imports="import $(echo "$modules" | sed 's/ /, /g')"
    if [ -z "$python" ]; then
        local venv="$here/.venv"
        if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "$imports" 2>/dev/null; then
            echo "Installing $modules into $venv" >&2
            python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet --upgrade pip
            local module
            for module in $modules; do
                case "$module" in
                    # PyPI's torch brings its CUDA libraries along (several GB);
                    # TORCH_INDEX_URL can name an index of CPU-only wheels instead.
                    torch) "$venv/bin/pip" install --quiet torch ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} ;;
                    tensorflow) "$venv/bin/pip" install --quiet tensorflow-cpu ;;
                    *) "$venv/bin/pip" install --quiet "$module" ;;
                esac
            done
        fi
        python="$venv/bin/python"
    fi
    "$python" -c "$imports" || {
        echo "$python lacks one of: $modules" >&2
        exit 1
    }
}

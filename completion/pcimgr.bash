_pcimgr_completion() {
    local IFS=$'\n'
    local response line cur
    local -a words
    line=${COMP_LINE:0:$COMP_POINT}
    IFS=$' \t' read -r -a words <<< "$line"
    [[ $line == *[[:space:]] || ${#words[@]} -eq 0 ]] && words+=("")
    cur=${words[${#words[@]}-1]}
    IFS=$'\n'

    response=$(env COMP_WORDS="${words[*]}" COMP_CWORD=$(( ${#words[@]} - 1 )) \
        _PCIMGR_COMPLETE=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=($value)
        fi
    done

    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local prefix=${cur%"${cur##*:}"} i
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[$i]=${COMPREPLY[$i]#"$prefix"}
        done
    fi
    return 0
}

_pcimgr_completion_setup() {
    complete -o nosort -F _pcimgr_completion pcimgr
}

_pcimgr_completion_setup;

package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Scripts that ask dcmesh itself for completions (urfave/cli's
// --generate-bash-completion), so they follow the commands and flags of the
// installed version.
//
// They never hand dcmesh a "--": urfave/cli turns completion off for a
// command line holding one, and would then RUN the command with
// --generate-bash-completion as an argument (a TAB after
// "dcmesh rotate --" started a rotation). For flags they pass "-", which
// asks for the command's flags; after a "--" on the line they leave
// completion to the shell (only arguments follow).
const bashCompletion = `# dcmesh bash completion: source <(dcmesh completion bash)
_dcmesh_complete() {
  local cur opts w
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    [[ "$w" == "--" ]] && return 0
  done
  if [[ "$cur" == "-"* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" - --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _dcmesh_complete dcmesh
`

const zshCompletion = `#compdef dcmesh
# dcmesh zsh completion: dcmesh completion zsh > "${fpath[1]}/_dcmesh"
_dcmesh() {
  local -a opts
  local cur=${words[-1]}
  if (( ${words[(I)--]} > 0 && ${words[(I)--]} < ${#words} )); then
    _files
    return
  fi
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} - --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _dcmesh dcmesh
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Description: `bash:  source <(dcmesh completion bash)        # or save it in /etc/bash_completion.d/dcmesh
zsh:   dcmesh completion zsh > "${fpath[1]}/_dcmesh"`,
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(c.App.Writer, zshCompletion)
				return err
			}
			return usageError(c, "completion: say bash or zsh, e.g. source <(dcmesh completion bash)")
		},
	}
}

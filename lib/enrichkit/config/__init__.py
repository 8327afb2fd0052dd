"""What a run is asked to do: options and the plan (`plan`), the stages (`stages` reads and checks them into
`stagetypes`), placeholders (`templates`), prices and model facts (`pricing`, `lifecycle`), what changed in a job's
configuration (`configdiff`), the key (`keys`) and the environment and `.env` files it is read from (`envfiles`)."""

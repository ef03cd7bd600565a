// Reads {"values": [[a, b], ...], "proofs": [{root, leafEncoding, leaf, proof}, ...]} on stdin.
// Builds the tree with OpenZeppelin's StandardMerkleTree from the same values, and checks each
// proof with StandardMerkleTree.verify. Prints {"root": ..., "verified": [true, ...]}.
import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { values, proofs } = JSON.parse(input);
const tree = StandardMerkleTree.of(values, ["bytes32", "bytes32"]);
const verified = proofs.map((p) => {
  try {
    return StandardMerkleTree.verify(p.root, p.leafEncoding, p.leaf, p.proof);
  } catch (e) {
    return false;
  }
});
console.log(JSON.stringify({ root: tree.root, verified }));

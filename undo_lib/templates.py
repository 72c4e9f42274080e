"""Word-problem templates and filler vocabularies for the arithmetic setting.

Each template is a ``(prompt_template, suffix_template)`` pair written for this
project. A rendered word problem is ``prompt + answer + suffix``. The prompt ends
with a space where the answer goes, and the suffix is empty or starts with a space
or a period, so the answer is always the first whitespace-separated token after
the prompt.

Placeholders:
    ``{n1}``, ``{n2}``: the two operands. Each appears exactly once in every
        prompt template and never in a suffix, and the fillers contain no digits,
        so the operands are the only numbers in a rendered prompt. The tests in
        ``tests/test_arithmetic.py`` check these rules for every template.
    ``{name}``, ``{name2}``: two different first names.
    ``{creature}``, ``{Creature}``: one "the <animal or character>" filler, in
        lower case and with a capital first letter for the start of a sentence.
    ``{obj}``: a plural object. ``{containers}``: a plural container.
    ``{place}``: a place such as "the market".

Operand meaning per operation (see ``undo_lib.arithmetic``):
    addition: answer = n1 + n2.
    subtraction: answer = n1 - n2, where n1 > n2.
    multiplication: answer = n1 * n2.
    division: answer = n1 / n2, where n2 divides n1.

``EVAL_TEMPLATES`` use sentence frames that differ from every training
template. They are held out for evaluation and must never appear in training text.
"""

NAMES = (
    "Aisha", "Mateo", "Yuki", "Olu", "Priya", "Liam", "Sofia", "Kwame",
    "Mei", "Omar", "Ingrid", "Rahul", "Chloe", "Diego", "Fatima", "Hiroshi",
    "Amara", "Lucas", "Zara", "Ivan", "Nia", "Tomas", "Leila", "Kenji",
    "Ana", "Jamal", "Elena", "Arjun", "Sakura", "Noah", "Amina", "Felix",
    "Rosa", "Chen", "Maya", "Kofi", "Hana", "Emil", "Lucia", "Tariq",
    "Freya", "Ravi", "Ines", "Malik", "Astrid", "Javier", "Ayesha", "Oscar",
    "Yara", "Daniel", "Wei", "Esther", "Sione", "Ngozi", "Pablo", "Mira",
    "Anders", "Thandiwe", "Farid", "Camila", "Tane", "Aroha",
)

CREATURES = (
    "the fox", "the owl", "the rabbit", "the bear", "the squirrel", "the turtle",
    "the dragon", "the robot", "the wizard", "the pirate", "the knight", "the giant",
    "the elf", "the mouse", "the hedgehog", "the penguin", "the otter", "the badger",
    "the raccoon", "the goat", "the parrot", "the frog", "the princess",
    "the astronaut", "the troll", "the unicorn", "the monkey", "the elephant",
    "the lion", "the kangaroo",
)

OBJECTS = (
    "apples", "oranges", "pears", "bananas", "lemons", "plums", "cherries", "grapes",
    "marbles", "pencils", "crayons", "stickers", "buttons", "shells", "stones",
    "feathers", "acorns", "leaves", "flowers", "cookies", "cupcakes", "muffins",
    "candies", "books", "comics", "postcards", "stamps", "cards", "balloons", "toys",
    "blocks", "beads", "ribbons", "socks", "hats", "gloves", "scarves", "cups",
    "plates", "spoons", "forks", "bottles", "candles", "keys", "rings", "bells",
    "kites", "puzzles", "notebooks", "erasers", "paintbrushes", "seeds", "carrots",
    "potatoes", "tomatoes", "peppers", "onions", "nuts", "pebbles", "pinecones",
)

CONTAINERS = (
    "boxes", "baskets", "bags", "crates", "jars", "buckets", "trays", "drawers",
    "tins", "sacks",
)

PLACES = (
    "the market", "the park", "the library", "the beach", "the fair", "the museum",
    "the zoo", "the school", "the bakery", "the harbour", "the station", "the garden",
)

TRAIN_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "addition": (
        ("{name} has {n1} {obj}. {name2} gives {name} {n2} more {obj}. {name} now has ", " {obj}."),
        ("There are {n1} {obj} on the table and {n2} {obj} on the shelf. Altogether there are ", " {obj}."),
        ("{Creature} collected {n1} {obj} in the morning and {n2} {obj} in the afternoon, so {creature} collected ", " {obj} in all."),
        ("A basket holds {n1} {obj}. {name} puts in another {n2} {obj}. The basket now holds ", " {obj}."),
        ("{name} read {n1} pages on Monday and {n2} pages on Tuesday. In total {name} read ", " pages."),
        ("{name} bought {n1} {obj} at {place} and then bought {n2} more. {name} bought ", " {obj} altogether."),
        ("{Creature} found {n1} {obj} under a rock and {n2} {obj} behind a tree. {Creature} found ", " {obj} in total."),
        ("{name} and {name2} pooled their {obj}: {name} brought {n1} and {name2} brought {n2}. Together they have ", " {obj}."),
        ("The first row has {n1} {obj}, and the second row has {n2} {obj}. Both rows together contain ", " {obj}."),
        ("{name} scored {n1} points in the first game and {n2} points in the second game, for a total of ", " points."),
        ("A shop had {n1} {obj} in stock and received a delivery of {n2} {obj}. The shop now has ", " {obj} in stock."),
        ("{name} walked {n1} kilometres to {place} and then {n2} kilometres further. {name} walked ", " kilometres in total."),
        ("The top shelf holds {n1} {obj} and the bottom shelf holds {n2} {obj}. The two shelves hold ", " {obj}."),
        ("{Creature} had {n1} {obj} and was given {n2} {obj} by {name}. Now {creature} has ", " {obj}."),
        ("{name} planted {n1} tulips and {n2} roses in the garden. The number of flowers planted is ", "."),
        ("A train carried {n1} passengers, and {n2} more got on at the next station. The train now carries ", " passengers."),
        ("{name} saved {n1} coins last week and {n2} coins this week, which makes ", " coins saved so far."),
        ("The class made {n1} paper stars on Friday and {n2} paper stars on Saturday, giving ", " paper stars."),
        ("{name2} counted {n1} {obj} in one room and {n2} {obj} in another. {name2} counted ", " {obj} in both rooms."),
        ("{name} caught {n1} fish and {name2} caught {n2} fish. Between them they caught ", " fish."),
    ),
    "subtraction": (
        ("{name} had {n1} {obj} and gave {n2} of them to {name2}. {name} now has ", " {obj}."),
        ("There were {n1} {obj} in the box, and {name} took out {n2}. The box now contains ", " {obj}."),
        ("{Creature} had {n1} {obj} but lost {n2} of them on the way home. {Creature} still has ", " {obj}."),
        ("A shop had {n1} {obj} and sold {n2} of them. The shop has ", " {obj} left."),
        ("{name} baked {n1} cookies and the family ate {n2}. The number of cookies left is ", "."),
        ("A bus carried {n1} passengers, and {n2} got off at {place}. The bus now carries ", " passengers."),
        ("{name} needs {n1} {obj} and already has {n2}. {name} still needs ", " more {obj}."),
        ("A book has {n1} pages, and {name} has read {n2} of them. {name} has ", " pages left to read."),
        ("{name2} started with {n1} {obj} and used {n2} of them for a project. {name2} has ", " {obj} remaining."),
        ("{Creature} climbed {n1} steps and then walked back down {n2} steps, ending up on step ", "."),
        ("{name} has {n1} {obj} and {name2} has {n2} {obj}. {name} has ", " more {obj} than {name2}."),
        ("The temperature was {n1} degrees at noon and fell by {n2} degrees by evening. In the evening it was ", " degrees."),
        ("A farmer had {n1} sheep, and {n2} of them wandered off. The farmer still has ", " sheep."),
        ("{name} had {n1} coins and spent {n2} coins at {place}. {name} has ", " coins left."),
        ("Of the {n1} {obj} on the table, {n2} were broken. The number of unbroken {obj} is ", "."),
        ("A tree had {n1} apples, and the wind knocked {n2} of them down. There are ", " apples still on the tree."),
        ("{name} walked {n1} metres along a path and then turned back for {n2} metres. {name} is now ", " metres from the start."),
        ("{name} invited {n1} guests, but {n2} could not come. The number of guests who came was ", "."),
        ("There were {n1} birds on a wire, and {n2} flew away. ", " birds stayed on the wire."),
        ("{Creature} owned {n1} {obj} and traded {n2} of them to {name}. {Creature} kept ", " {obj}."),
    ),
    "multiplication": (
        ("{name} has {n1} {containers} with {n2} {obj} in each. {name} has ", " {obj} in total."),
        ("There are {n1} rows of chairs with {n2} chairs in each row. There are ", " chairs."),
        ("{Creature} eats {n2} {obj} every day for {n1} days. {Creature} eats ", " {obj} in all."),
        ("A pack holds {n2} {obj}, and {name} buys {n1} packs. {name} buys ", " {obj}."),
        ("{name} runs {n2} laps each day for {n1} days, for a total of ", " laps."),
        ("Each of the {n1} students brought {n2} {obj}. Together the students brought ", " {obj}."),
        ("A garden has {n1} rows of tomato plants, with {n2} plants per row. The garden has ", " tomato plants."),
        ("{name} reads {n2} pages a night for {n1} nights, which is ", " pages."),
        ("{n1} friends each paid {n2} coins for a ticket. They paid ", " coins altogether."),
        ("{name2} stacked {n1} towers of blocks, each {n2} blocks tall. {name2} used ", " blocks."),
        ("A bakery makes {n2} loaves in every batch and bakes {n1} batches. The bakery makes ", " loaves."),
        ("{Creature} visits {place} {n1} times and collects {n2} {obj} on every visit. {Creature} collects ", " {obj}."),
        ("There are {n1} tables at the party and {n2} guests sit at each table. The party has ", " guests."),
        ("{name} plants {n1} rows of seeds with {n2} seeds per row, planting ", " seeds."),
        ("Every box on the truck holds {n2} {obj}, and the truck carries {n1} boxes. The truck carries ", " {obj}."),
        ("{name} saves {n2} coins each week for {n1} weeks. {name} saves ", " coins."),
        ("A wall is built from {n1} layers of {n2} bricks each, using ", " bricks."),
        ("{name} and the team won {n1} matches and earned {n2} points per win, so they earned ", " points."),
        ("A parking lot has {n1} rows with {n2} spaces in every row. The lot has ", " spaces."),
        ("{name} buys {n1} bags of {obj}, and every bag contains {n2} {obj}. {name} buys ", " {obj} altogether."),
    ),
    "division": (
        ("{name} shares {n1} {obj} equally among {n2} friends. Each friend gets ", " {obj}."),
        ("{n1} students are split into {n2} equal teams. Each team has ", " students."),
        ("{Creature} packs {n1} {obj} into {n2} {containers} with the same number in each. Each of the {containers} holds ", " {obj}."),
        ("A rope {n1} metres long is cut into {n2} equal pieces. Each piece is ", " metres long."),
        ("{name} reads a {n1}-page book in {n2} days, reading the same number of pages each day. {name} reads ", " pages a day."),
        ("{n1} chairs are arranged in {n2} equal rows. Each row has ", " chairs."),
        ("{name} paid {n1} coins for {n2} tickets that all cost the same. One ticket cost ", " coins."),
        ("A farmer puts {n1} eggs into cartons of equal size, filling {n2} cartons. Each carton holds ", " eggs."),
        ("{name2} divides {n1} {obj} evenly into {n2} piles. Each pile has ", " {obj}."),
        ("A baker uses {n1} cups of flour to make {n2} identical cakes. Each cake needs ", " cups of flour."),
        ("{Creature} walked {n1} kilometres in {n2} days, covering the same distance each day. {Creature} walked ", " kilometres per day."),
        ("There are {n1} {obj} shared evenly by {n2} children at {place}. Every child receives ", " {obj}."),
        ("A teacher hands out {n1} pencils equally to {n2} pupils. Each pupil gets ", " pencils."),
        ("{name} earned {n1} coins by working {n2} hours at the same rate. {name} earned ", " coins per hour."),
        ("A box of {n1} chocolates is shared equally by {n2} people. Each person eats ", " chocolates."),
        ("{n1} runners form {n2} equal groups for a relay. Each group has ", " runners."),
        ("{name} stacks {n1} books onto {n2} shelves, putting the same number on every shelf. Every shelf holds ", " books."),
        ("A gardener plants {n1} bulbs in {n2} equal rows. Each row gets ", " bulbs."),
        ("{Creature} splits {n1} {obj} into {n2} equal heaps. Each heap contains ", " {obj}."),
        ("A bus trip of {n1} kilometres is driven in {n2} equal stages. Each stage is ", " kilometres long."),
    ),
}

EVAL_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "addition": (
        ("Yesterday {name} picked {n1} {obj}; today {name} picked another {n2}. Over the two days {name} picked ", " {obj}."),
        ("A jar starts with {n1} marbles. After {name} drops in {n2} marbles, the jar contains ", " marbles."),
        ("{Creature} owns {n1} {obj}, and a friend hands over {n2} extra {obj}. The count of {obj} that {creature} owns is now ", "."),
        ("Adding {n1} new members to a club of {n2} people gives a club of ", " people."),
        ("At {place}, {n1} people arrived before lunch and {n2} arrived after lunch. The total number of visitors was ", "."),
        ("The red team has {n1} players and the blue team has {n2} players. Counting both teams gives ", " players."),
        ("{name} drove {n1} miles before the break and {n2} miles after it, covering ", " miles overall."),
        ("A library lent out {n1} novels in May and {n2} novels in June. Across both months it lent out ", " novels."),
        ("{name2} wrote {n1} letters and {name} wrote {n2} letters. The pair wrote ", " letters between them."),
        ("When {n2} {obj} are added to a pile of {n1} {obj}, the pile grows to ", " {obj}."),
    ),
    "subtraction": (
        ("After {creature} gives away {n2} of {n1} {obj}, the number left is ", "."),
        ("A pond held {n1} ducks until {n2} of them flew off. The pond now holds ", " ducks."),
        ("{name} ordered {n1} {obj}, but {n2} arrived damaged. The number of undamaged {obj} was ", "."),
        ("Starting from {n1} points, {name} loses {n2} points in a penalty and ends with ", " points."),
        ("The hall had {n1} seats, and {n2} of them were taken. Free seats remaining: ", "."),
        ("{name2} is {n1} years old and {name} is {n2} years old. The age gap between them is ", " years."),
        ("A cake was cut into {n1} slices, and the guests ate {n2}. Uneaten slices: ", "."),
        ("Taking {n2} away from a heap of {n1} {obj} leaves ", " {obj}."),
        ("{name} had saved {n1} coins, and a gift then cost {n2} coins, which left ", " coins."),
        ("The elevator held {n1} riders, and {n2} stepped out on the third floor, leaving ", " riders inside."),
    ),
    "multiplication": (
        ("Every one of the {n1} {containers} that {name} owns contains {n2} {obj}, so the full count is ", " {obj}."),
        ("A cinema has {n1} rows and each row seats {n2} people, giving room for ", " people."),
        ("{Creature} hops {n2} times a minute for {n1} minutes, making ", " hops."),
        ("If one ticket costs {n2} coins, then {n1} tickets cost ", " coins."),
        ("{name} fills {n1} notebooks with {n2} sketches apiece, producing ", " sketches."),
        ("{name} folds {n2} paper cranes an hour for {n1} hours and ends up with ", " cranes."),
        ("An orchard has {n1} apple trees bearing {n2} apples apiece, which comes to ", " apples."),
        ("Multiplying the {n1} crates by the {n2} melons in each crate, {name} counts ", " melons."),
        ("{name2} glued {n2} stickers onto each of {n1} pages, using ", " stickers in total."),
        ("At {place}, {n1} tables are set with {n2} plates apiece, which means ", " plates are needed."),
    ),
    "division": (
        ("Splitting {n1} {obj} fairly between {n2} people gives every person ", " {obj}."),
        ("{name} puts {n1} photos into an album of {n2} pages, the same number per page, so each page shows ", " photos."),
        ("{Creature} needs {n2} equal trips to carry {n1} {obj}, moving ", " {obj} per trip."),
        ("If {n2} identical bottles hold {n1} litres altogether, one bottle holds ", " litres."),
        ("A ribbon measuring {n1} centimetres is snipped into {n2} same-sized strips, each strip measuring ", " centimetres."),
        ("The {n1} marbles in a bag are dealt out evenly to {n2} players, so a player receives ", " marbles."),
        ("{name} drove {n1} miles in {n2} hours at a steady speed, averaging ", " miles per hour."),
        ("At {place}, {n1} visitors are sorted into {n2} tour groups of equal size, with ", " visitors per group."),
        ("A prize of {n1} coins is shared equally by {name} and the other winners, {n2} people in all, so each takes ", " coins."),
        ("{name2} arranges {n1} tiles into {n2} equal columns, which puts ", " tiles in each column."),
    ),
}
